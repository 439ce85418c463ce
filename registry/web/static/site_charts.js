// The data managers' charts (My site): completeness per optional field as bars from 0 to 100%,
// drawn with Observable Plot through charts.js from the page's own JSON data island. The
// numbers are in the table beside the chart.
(function () {
  "use strict";
  const charts = window.registryCharts;
  if (!charts) return;

  function drawCompleteness(target, fields) {
    const shown = fields.filter((field) => field.percent !== null);
    const none = fields.filter((field) => field.percent === null);
    return Plot.plot({
      width: Math.min(charts.width(target), 860), height: 48 + 28 * fields.length,
      style: {fontSize: "12px"}, marginLeft: 360, marginRight: 48,
      x: {label: "Share of records giving the field (%)", domain: [0, 100], grid: true},
      y: {label: null, domain: fields.map((field) => field.field)},
      marks: [
        Plot.barX(shown, {x: "percent", y: "field", fill: "#0b5394"}),
        Plot.text(shown, {x: "percent", y: "field", text: (d) => `${Math.round(d.percent)}%`,
                          dx: 18, fill: "#1b1f24"}),
        Plot.text(none, {x: 0, y: "field", text: () => "no record it applies to",
                         textAnchor: "start", dx: 6, fill: "#4a5560", fontStyle: "italic"}),
        Plot.ruleX([0]),
      ],
    });
  }

  charts.place("completeness-figure", drawCompleteness, charts.answer("completeness-answer"),
               "completeness");
})();
