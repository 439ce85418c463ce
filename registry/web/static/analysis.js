// The analysis forms, helped along (they work without this; the server checks everything
// again): the landmark's years only with a landmark, which compares stopped and continuing and so
// takes no other grouping; the chosen grouping's meaning under its drop-down; no filter on the
// grouped characteristic; at most four covariates.
(function () {
  "use strict";
  const form = document.getElementById("survival-question") ||
    document.getElementById("hazard-question");
  if (!form) return;
  const origin = form.elements.namedItem("origin");
  const landmarkField = document.getElementById("landmark-field");
  const landmark = form.elements.namedItem("landmark_years");
  const by = form.elements.namedItem("by");
  const hint = document.getElementById("by-meaning");
  const filters = Array.from(form.querySelectorAll("select[name=filter]"));
  const boxes = Array.from(form.querySelectorAll("input[name=covariate]"));
  const MAX_COVARIATES = 4;

  function refresh() {
    const isLandmark = origin.value === "landmark";
    landmarkField.hidden = !isLandmark;
    landmark.disabled = !isLandmark;
    if (by) {
      by.disabled = isLandmark;
      const chosen = by.selectedOptions[0];
      hint.textContent = isLandmark
        ? "The landmark design draws one curve for records that had stopped trastuzumab by " +
          "the landmark and one for those continuing."
        : (chosen && chosen.dataset.meaning ? chosen.dataset.meaning + "." : "");
    }
    const grouped = new Set(boxes.filter((box) => box.checked).map((box) => box.value));
    if (by && !by.disabled && by.value) grouped.add(by.value);
    filters.forEach((select, index) => {
      const others = filters.filter((_, j) => j !== index).map((f) => f.value.split("=")[0]);
      for (const option of select.querySelectorAll("option")) {
        const dimension = option.value.split("=")[0];
        option.disabled = option.value !== "" &&
          (grouped.has(dimension) || others.includes(dimension));
      }
      if (select.selectedOptions[0] && select.selectedOptions[0].disabled) select.value = "";
    });
    filters.forEach((select) => {
      const chosen = select.selectedOptions[0];
      const note = document.getElementById(select.id + "-meaning");
      if (note) note.textContent = chosen && chosen.dataset.meaning ? chosen.dataset.meaning : "";
    });
    const full = boxes.filter((box) => box.checked).length >= MAX_COVARIATES;
    boxes.forEach((box) => { box.disabled = full && !box.checked; });
  }

  form.addEventListener("change", refresh);
  refresh();
})();
