// The survival curves (a step plot with 95% bands and, under it, the numbers at risk as
// journals print them) and the forest plot of hazard ratios, drawn with Observable Plot from the
// answer the server embedded in the page; downloadable as SVG and PNG (charts.js).
(function () {
  "use strict";
  const charts = window.registryCharts;
  if (!charts) return;
  const INK = "#1b1f24";
  const style = {fontSize: "12px"};

  // Per group, the curve's points: 1 at the start of its first estimated interval, then the
  // estimate at each interval's end, until the first interval without one.
  function curvePoints(answer, labels) {
    const points = [];
    for (const group of answer.groups) {
      const label = labels[group.group];
      let started = false;
      for (const interval of group.intervals) {
        if (interval.survival === null || interval.to_year === null) {
          if (started) break;
          continue;
        }
        if (!started) {
          points.push({group: label, year: interval.from_year, survival: 1, lower: 1, upper: 1});
          started = true;
        }
        points.push({group: label, year: interval.to_year, survival: interval.survival,
                     lower: interval.lower, upper: interval.upper});
      }
    }
    return points;
  }

  function drawSurvival(target, chart) {
    const answer = chart.answer;
    const risk = chart.risk;
    const k = answer.disclosure.min_cell_count;
    const names = answer.groups.map((group) => chart.labels[group.group]);
    const points = curvePoints(answer, chart.labels);
    const span = answer.years - risk.years[0];
    const legend = names.map((name, index) => ({
      group: name, x1: risk.years[0] + 0.03 * span, x2: risk.years[0] + 0.09 * span,
      y: 0.06 + 0.065 * (names.length - 1 - index)}));
    const rows = [];
    risk.groups.forEach((row, index) => {
      row.at_risk.forEach((n, column) => rows.push({
        group: chart.labels[row.group], line: index, year: risk.years[column], zero: 0,
        text: n === null ? `<${k}` : String(n)}));
    });
    const lineHeight = 18;
    const riskTop = 56;
    const first = risk.years[0];
    return Plot.plot({
      width: charts.width(target), height: 380 + lineHeight * names.length, style,
      marginLeft: 150, marginRight: 40, marginTop: 20,
      marginBottom: riskTop + lineHeight * names.length + 10,
      x: {label: "Years since " + chart.origin_words, labelAnchor: "center", labelOffset: 34,
          domain: [first, answer.years], ticks: risk.years},
      y: {label: "Free of " + chart.event, domain: [0, 1], grid: true, tickFormat: "%"},
      color: {type: "categorical", scheme: "tableau10", domain: names},
      marks: [
        Plot.areaY(points, {x: "year", y1: "lower", y2: "upper", fill: "group",
                            fillOpacity: 0.15, curve: "step-after"}),
        Plot.line(points, {x: "year", y: "survival", stroke: "group", strokeWidth: 2,
                           curve: "step-after"}),
        // The legend, in the frame's lower left (curves of remission stay high).
        Plot.link(legend, {x1: "x1", x2: "x2", y1: "y", y2: "y", stroke: "group",
                           strokeWidth: 2.5}),
        Plot.text(legend, {x: "x2", y: "y", text: "group", textAnchor: "start", dx: 6,
                           fill: INK}),
        Plot.ruleY([0]),
        // The numbers at risk, under the axis, one line per group (as journals print them).
        Plot.text([{year: first, zero: 0}], {x: "year", y: "zero", text: () => "Number at risk",
                   textAnchor: "end", dx: -8, dy: riskTop - lineHeight + 4, fontWeight: 700,
                   fill: INK}),
        ...names.map((name, index) => Plot.text(rows.filter((r) => r.line === index), {
          x: "year", y: "zero", text: "text", dy: riskTop + lineHeight * index + 4, fill: INK})),
        ...names.map((name, index) => Plot.text([{year: first, zero: 0, group: name}], {
          x: "year", y: "zero", text: "group", textAnchor: "end", dx: -22,
          dy: riskTop + lineHeight * index + 4, fill: "group", fontWeight: 600})),
      ],
    });
  }

  // Journal style: a heading line per covariate, its levels indented under it; the ratio and
  // its interval as numbers on the right.
  function drawForest(target, chart) {
    const answer = chart.answer;
    const rows = [];
    let covariate = null;
    answer.levels.forEach((row, index) => {
      if (row.covariate !== covariate) {
        covariate = row.covariate;
        rows.push({key: `h${index}`, heading: true,
                   label: chart.titles[row.covariate] || row.covariate, text: ""});
      }
      rows.push({...row, key: `l${index}`, heading: false,
                 label: chart.levels[`${row.covariate}=${row.level}`],
                 text: row.reference ? "1 (reference)" : row.hazard_ratio === null
                   ? "no estimate"
                   : `${row.hazard_ratio.toFixed(2)} (${row.lower.toFixed(2)}\u2013` +
                     `${row.upper.toFixed(2)})`});
    });
    const estimated = rows.filter((row) => !row.heading && !row.reference &&
                                           row.hazard_ratio !== null);
    const references = rows.filter((row) => row.reference);
    const low = Math.min(0.5, ...estimated.map((row) => row.lower)) / 1.15;
    const high = Math.max(2, ...estimated.map((row) => row.upper)) * 1.15;
    const ticks = [0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 10, 20]
      .filter((t) => t >= low && t <= high);
    const marginLeft = 330;
    return Plot.plot({
      width: charts.width(target), height: 70 + 26 * rows.length, style,
      marginLeft, marginRight: 150, marginTop: 10, marginBottom: 44,
      x: {type: "log", domain: [low, high], ticks, tickFormat: (t) => String(t),
          label: "Hazard ratio against the reference (log scale)", labelAnchor: "center",
          labelOffset: 36, grid: true},
      y: {domain: rows.map((row) => row.key), axis: null},
      marks: [
        Plot.ruleX([1], {stroke: INK, strokeDasharray: "4,3"}),
        Plot.text(rows.filter((row) => row.heading), {
          x: low, y: "key", text: "label", textAnchor: "start", dx: 10 - marginLeft,
          fill: INK, fontWeight: 700, stroke: "white", strokeWidth: 4, paintOrder: "stroke"}),
        Plot.text(rows.filter((row) => !row.heading), {
          x: low, y: "key", text: "label", textAnchor: "start", dx: 26 - marginLeft,
          fill: INK}),
        Plot.ruleY(estimated, {x1: "lower", x2: "upper", y: "key", stroke: "#0b5394",
                               strokeWidth: 2}),
        Plot.dot(estimated, {x: "hazard_ratio", y: "key", fill: "#0b5394", r: 5,
                             symbol: "square"}),
        Plot.dot(references, {x: 1, y: "key", stroke: INK, fill: "white", r: 4}),
        Plot.text(rows, {x: high, y: "key", text: "text", textAnchor: "start", dx: 12,
                         fill: INK}),
      ],
    });
  }

  const survival = charts.answer("survival-answer");
  if (survival) charts.place("survival-figure", drawSurvival, survival, "survival");
  const forest = charts.answer("hazard-answer");
  if (forest) charts.place("forest-figure", drawForest, forest, "hazard_ratios");
})();
