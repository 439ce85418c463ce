// The tables form, helped along (it works without this): a characteristic counted in rows
// cannot also be the columns or a filter, two filters need two characteristics, and the site
// is counted only on its own. The server checks all of this again.
(function () {
  "use strict";
  const form = document.getElementById("question");
  if (!form) return;
  const rows = form.elements.namedItem("rows");
  const columns = form.elements.namedItem("columns");
  const filters = Array.from(form.querySelectorAll("select[name=filter]"));
  const dimensionOf = (value) => value.split("=")[0];

  function refresh() {
    const chosen = rows.selectedOptions[0];
    const alone = Boolean(chosen && chosen.dataset.aloneOnly === "true");
    columns.disabled = alone;
    filters.forEach((select) => { select.disabled = alone; });
    for (const option of columns.options) {
      option.disabled = option.value !== "" && option.value === rows.value;
    }
    if (columns.selectedOptions[0] && columns.selectedOptions[0].disabled) columns.value = "";
    const grouped = new Set([rows.value, columns.value].filter(Boolean));
    filters.forEach((select, index) => {
      const others = filters.filter((_, j) => j !== index).map((f) => dimensionOf(f.value));
      for (const option of select.querySelectorAll("option")) {
        const dimension = dimensionOf(option.value);
        option.disabled = option.value !== "" &&
          (grouped.has(dimension) || others.includes(dimension));
      }
      if (select.selectedOptions[0] && select.selectedOptions[0].disabled) select.value = "";
    });
  }

  form.addEventListener("change", refresh);
  refresh();
})();
