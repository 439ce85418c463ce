// Charts of the console, drawn with Observable Plot (served from the package, never a CDN) from
// the answers the server embeds in the page as JSON data islands. Each chart is also offered as
// SVG and PNG. The numbers themselves are always in the HTML table beside the chart.
(function () {
  "use strict";
  if (typeof Plot === "undefined") return;

  const registryCharts = {};

  registryCharts.answer = function (id) {
    const island = document.getElementById(id);
    return island ? JSON.parse(island.textContent) : null;
  };

  function svgOf(plot) {
    return plot.tagName.toLowerCase() === "svg" ? plot : plot.querySelector("svg");
  }

  function svgText(svg) {
    const copy = svg.cloneNode(true);
    copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
    copy.setAttribute("font-family", "DejaVu Sans, Arial, sans-serif");
    return new XMLSerializer().serializeToString(copy);
  }

  // SVG as drawn; PNG at twice the size on white, for slides and word processors.
  function offerDownloads(figure, plot, name) {
    const svg = svgOf(plot);
    const text = svgText(svg);
    const svgLink = figure.querySelector("[data-download=svg]");
    const pngLink = figure.querySelector("[data-download=png]");
    if (svgLink) {
      svgLink.href = URL.createObjectURL(new Blob([text], {type: "image/svg+xml"}));
      svgLink.download = name + ".svg";
      svgLink.hidden = false;
    }
    if (pngLink) {
      const width = svg.width.baseVal.value;
      const height = svg.height.baseVal.value;
      const image = new Image();
      image.onload = () => {
        const canvas = document.createElement("canvas");
        canvas.width = 2 * width;
        canvas.height = 2 * height;
        const context = canvas.getContext("2d");
        context.fillStyle = "#ffffff";
        context.fillRect(0, 0, canvas.width, canvas.height);
        context.scale(2, 2);
        context.drawImage(image, 0, 0, width, height);
        canvas.toBlob((blob) => {
          pngLink.href = URL.createObjectURL(blob);
          pngLink.download = name + ".png";
          pngLink.hidden = false;
        }, "image/png");
      };
      image.src = URL.createObjectURL(new Blob([text], {type: "image/svg+xml"}));
    }
  }

  // Draw `draw(target, data)` into figure#id's .plot element, named for screen readers.
  registryCharts.place = function (id, draw, data, name) {
    const figure = document.getElementById(id);
    if (!figure || !data) return;
    const target = figure.querySelector(".plot");
    const plot = draw(target, data);
    if (!plot) return;
    const svg = svgOf(plot);
    // The chart is one image with one name (the table beside it holds the numbers): Plot's
    // labels of its inner groups would be ARIA on presentational elements.
    for (const inner of svg.querySelectorAll("[aria-label], [aria-description]")) {
      inner.removeAttribute("aria-label");
      inner.removeAttribute("aria-description");
    }
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", target.dataset.label || name);
    target.replaceChildren(plot);
    offerDownloads(figure, plot, name);
  };

  registryCharts.width = (target) => Math.min(target.clientWidth || 900, 1000);

  // A count table as bars: one bar per published count (a withheld count draws no bar).
  function drawTable(target, table) {
    const rows = table.rows;
    const columns = table.columns;
    const shown = table.cells.filter((cell) => cell.count !== null);
    const withheld = table.cells.filter((cell) => cell.count === null);
    const note = `fewer than ${table.disclosure.min_cell_count} (withheld)`;
    const style = {fontSize: "12px"};
    if (!columns) {
      return Plot.plot({
        width: registryCharts.width(target), height: 40 + 28 * table.cells.length, style,
        marginLeft: 180, x: {label: "Records", grid: true},
        y: {label: null, domain: table.cells.map((cell) => cell[rows])},
        marks: [Plot.barX(shown, {x: "count", y: rows, fill: "#0b5394"}),
                Plot.text(shown, {x: "count", y: rows, text: "count", dx: 12,
                                  fill: "#1b1f24"}),
                Plot.text(withheld, {x: 0, y: rows, text: () => note, textAnchor: "start",
                                     dx: 6, fill: "#6b3a00", fontStyle: "italic"}),
                Plot.ruleX([0])],
      });
    }
    return Plot.plot({
      width: registryCharts.width(target),
      height: 40 + 24 * table.cells.length, style,
      marginLeft: 180, marginRight: 150,
      x: {label: "Records", grid: true},
      y: {label: null, domain: table.column_totals.map((total) => total[columns])},
      fy: {label: null, axis: "right", domain: table.row_totals.map((total) => total[rows])},
      color: {type: "categorical", scheme: "tableau10",
              domain: table.column_totals.map((total) => total[columns])},
      marks: [Plot.barX(shown, {x: "count", y: columns, fy: rows, fill: columns}),
              Plot.text(shown, {x: "count", y: columns, fy: rows, text: "count", dx: 12,
                                fill: "#1b1f24"}),
              Plot.text(withheld, {x: 0, y: columns, fy: rows, text: () => note,
                                   textAnchor: "start", dx: 6, fill: "#6b3a00",
                                   fontStyle: "italic"}),
              Plot.ruleX([0])],
    });
  }

  window.registryCharts = registryCharts;
  registryCharts.place("table-figure", drawTable, registryCharts.answer("table-answer"),
                       "counts");
})();
