// The upload page: a spreadsheet is read and de-identified in this browser, exactly as
// registry-submit does it at a site (registry/site/submit and registry/core/deidentify.py),
// driven by the description of the site-side fields the server publishes (site-fields.json,
// from registry/core/site_fields.py): no list of fields lives here.
//
// What leaves the browser: de-identified records only (days from day 0, the year of day 0, an
// HMAC pseudonym written in letters, codes and whole numbers). The file, its dates, its record
// ids and the site secret stay in this page's memory; the secret's field belongs to no form and
// nothing is written to storage. Batches are serialised as Python's json.dumps writes them
// (", " and ": " separators, ASCII only), so that the registry receives the very bytes
// registry-submit would send for the same file.
(function () {
  "use strict";
  const root = document.getElementById("upload");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const csrf = root.dataset.csrf;
  const SOURCE_HEADER = "X-Registry-Source";

  // --- JSON as Python's json.dumps writes it --------------------------------------------------
  function pyString(text) {
    return JSON.stringify(text).replace(/[^\x20-\x7e]/g, (c) =>
      "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }
  function pyJson(value) {
    if (value === null || value === undefined) return "null";
    if (typeof value === "bigint") return value.toString();
    if (typeof value === "number") return String(value);
    if (typeof value === "boolean") return value ? "true" : "false";
    if (typeof value === "string") return pyString(value);
    if (Array.isArray(value)) return "[" + value.map(pyJson).join(", ") + "]";
    return "{" + Object.keys(value).map((key) => pyString(key) + ": " + pyJson(value[key]))
      .join(", ") + "}";
  }

  // --- reading the file: CSV as Python's csv module, .xlsx with read-excel-file -------------
  class FileProblem extends Error {}

  function parseCsv(text) {
    // Python's csv.reader, excel dialect: quoted fields with "" for a quote, any newline ends a
    // record, a blank line is an empty record (it still counts as a row of the file).
    if (text.includes("\0")) throw new FileProblem("is not a UTF-8 CSV file");
    const rows = [];
    let row = [], field = "", state = "start_record";
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (state === "in_quoted") {
        if (c === '"') {
          if (text[i + 1] === '"') { field += '"'; i++; } else { state = "after_quote"; }
        } else field += c;
        continue;
      }
      if (c === "\r" || c === "\n") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        if (state === "start_record") rows.push([]);
        else { row.push(field); rows.push(row); }
        row = []; field = ""; state = "start_record";
      } else if (c === ",") {
        row.push(field); field = ""; state = "start_field";
      } else if (c === '"' && (state === "start_record" || state === "start_field")) {
        state = "in_quoted";
      } else {
        field += c; state = "in_field";
      }
    }
    // At the end, an open quote closes (Python's non-strict reader keeps the field).
    if (state !== "start_record") { row.push(field); rows.push(row); }
    return rows;
  }

  async function readTable(file, description) {
    const name = file.name.toLowerCase();
    if (name.endsWith(".csv")) {
      let text;
      try {
        text = new TextDecoder("utf-8", {fatal: true}).decode(await file.arrayBuffer());
      } catch (error) {
        throw new FileProblem("is not a UTF-8 CSV file");
      }
      const rows = parseCsv(text);
      if (!rows.length) throw new FileProblem("is empty");
      return {header: rows[0], rows: rows.slice(1)};
    }
    if (name.endsWith(".xlsx") || name.endsWith(".xlsm")) {
      let sheets;
      try {
        sheets = await window.readXlsxFile(file);
      } catch (error) {
        throw new FileProblem("is not an .xlsx workbook");
      }
      const sheet = sheets.find((s) => s.sheet === description.records_sheet) || sheets[0];
      const rows = (sheet && sheet.data) || [];
      if (!rows.length) throw new FileProblem("has an empty first sheet");
      return {header: rows[0].map(cellText), rows: rows.slice(1)};
    }
    throw new FileProblem("must be .csv (REDCap export or template) or .xlsx");
  }

  // --- cells and dates, as registry/site/submit/spreadsheet.py and core/site_fields.py -------
  const pad = (n, width) => String(n).padStart(width, "0");
  const isoOf = (y, m, d) => pad(y, 4) + "-" + pad(m, 2) + "-" + pad(d, 2);

  function cellText(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "boolean") return value ? "1" : "0";
    if (typeof value === "number" && Number.isInteger(value)) return BigInt(value).toString();
    if (value instanceof Date) {  // a date in a column that is not a date: as Python's str()
      const t = value.toISOString();
      return t.slice(0, 10) + " " + t.slice(11, 19);
    }
    return String(value).trim();
  }

  function validDate(y, m, d) {
    if (y < 1 || y > 9999 || m < 1 || m > 12 || d < 1) return null;
    const probe = new Date(Date.UTC(2000, m - 1, d));
    probe.setUTCFullYear(y);
    if (probe.getUTCMonth() !== m - 1 || probe.getUTCDate() !== d) return null;
    return isoOf(y, m, d);
  }

  function normaliseDate(value, order, dates) {
    if (value instanceof Date) {
      return isoOf(value.getUTCFullYear(), value.getUTCMonth() + 1, value.getUTCDate());
    }
    let text;
    if (typeof value === "boolean") {
      text = value ? "True" : "False";  // Python's str() of a boolean cell
    } else if (typeof value === "number") {
      text = Number.isInteger(value) ? BigInt(value).toString() : String(value);
    } else text = String(value).trim();
    const iso = new RegExp(dates.iso).exec(text);
    if (iso) return validDate(+iso[1], +iso[2], +iso[3]) || text;
    if (new RegExp(dates.serial).test(text)) {
      const epoch = dates.excel_epoch.split("-").map(Number);
      const day = new Date(Date.UTC(epoch[0], epoch[1] - 1, epoch[2]) +
                           Math.trunc(parseFloat(text)) * 86400000);
      return isoOf(day.getUTCFullYear(), day.getUTCMonth() + 1, day.getUTCDate());
    }
    const parts = new RegExp(dates.separated).exec(text);
    if (parts) {
      const [first, second, third] = parts.slice(1);
      let year, month, day;
      if (order === "ymd" || first.length === 4) [year, month, day] = [first, second, third];
      else if (order === "mdy") [month, day, year] = [first, second, third];
      else [day, month, year] = [first, second, third];
      if (year.length === 4) return validDate(+year, +month, +day) || text;
    }
    return text;
  }

  function isIdentifierName(name, words) {
    // core/identifiers.py is_identifier_field_name, with the words the server publishes
    const spaced = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2");
    const parts = spaced.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
    if (parts.some((word) => words.short_words.includes(word))) return true;
    const compact = parts.join("");
    return words.long_words.some((word) => compact.includes(word));
  }

  // registry/site/submit/spreadsheet.py read_spreadsheet
  function readSheet(table, order, description) {
    const known = new Map(description.columns.map((c) => [c.name, c.kind]));
    const recordId = description.record_id;
    const names = table.header.map((name) => String(name === null || name === undefined ? "" : name)
      .trim().toLowerCase());
    if (!names.includes(recordId)) {
      throw new FileProblem("has no " + recordId + " column: use the registry's template or a " +
                            "REDCap export in raw codes");
    }
    const dropped = names.filter((name) => name && !known.has(name));
    const sheet = {rowsOf: new Map(), rowNumbers: new Map(), rowsRead: 0, rowsWithoutId: [],
                   droppedColumns: dropped.length,
                   droppedIdentifierColumns: dropped.filter(
                     (name) => isIdentifierName(name, description.identifier_names)).length};
    const kept = names.map((name, index) => [index, name]).filter(([, name]) => known.has(name));
    table.rows.forEach((row, offset) => {
      const number = offset + 2;
      const values = new Map();
      for (const [index, name] of kept) values.set(name, index < row.length ? row[index] : null);
      if ([...values.values()].every((value) => cellText(value) === "")) return;
      sheet.rowsRead += 1;
      const flat = {};
      for (const [name, value] of values) {
        if (known.get(name) === "date" && cellText(value) !== "") {
          flat[name] = normaliseDate(value, order, description.dates);
        } else if (name === "redcap_repeat_instance") {
          const text = cellText(value);
          flat[name] = /^\d+$/.test(text) ? parseInt(text, 10) : "";
        } else flat[name] = cellText(value);
      }
      const id = flat[recordId] || "";
      if (!id) { sheet.rowsWithoutId.push(number); return; }
      if (!sheet.rowsOf.has(id)) { sheet.rowsOf.set(id, []); sheet.rowNumbers.set(id, []); }
      sheet.rowsOf.get(id).push(flat);
      sheet.rowNumbers.get(id).push(number);
    });
    return sheet;
  }

  // --- de-identification: registry/core/deidentify.py assemble -------------------------------
  function dayNumber(iso) {
    const [y, m, d] = iso.split("-").map(Number);
    const when = new Date(Date.UTC(2000, m - 1, d));
    when.setUTCFullYear(y);
    return Math.round(when.getTime() / 86400000);
  }

  function assemble(rows, description) {
    const problems = [];
    const edge = description.problems;
    const problem = (field, what) => problems.push({field, ...edge[what]});
    const datePattern = new RegExp(description.dates.normalised);
    const parseDate = (name, text) => {
      if (datePattern.test(text)) {
        const [y, m, d] = text.split("-").map(Number);
        if (validDate(y, m, d)) return text;
      }
      problem(name, "malformed_date");
      return null;
    };
    const present = (value) => value !== undefined && value !== null && value !== "";
    const visitDate = description.follow_up.visit_date;
    const visits = [];
    rows.forEach((row, order) => {
      const text = String(present(row[visitDate]) ? row[visitDate] : "");
      const when = text ? parseDate(visitDate, text) : null;
      if (when !== null) {
        const instance = row.redcap_repeat_instance;
        visits.push([when, Number.isInteger(instance) ? instance : 0, order, row]);
      }
    });
    let visit = null;
    for (const candidate of visits) {
      if (!visit || candidate[0] > visit[0] || (candidate[0] === visit[0] &&
          (candidate[1] > visit[1] || (candidate[1] === visit[1] && candidate[2] > visit[2])))) {
        visit = candidate;
      }
    }
    visit = visit && visit[3];
    const boxes = new Map();
    for (const row of rows) {
      for (const key of Object.keys(row)) {
        if (!key.includes("___")) continue;
        const at = key.indexOf("___");
        const name = key.slice(0, at), code = key.slice(at + 3);
        if (!boxes.has(name)) boxes.set(name, new Set());
        if (String(row[key]) === "1") boxes.get(name).add(code);
      }
    }
    const single = (name) => {
      const values = new Set(rows.filter((row) => present(row[name]))
        .map((row) => String(row[name])));
      if (values.size > 1) { problem(name, "conflicting_values"); return null; }
      return values.size ? [...values][0] : null;
    };
    const valueOf = (field) => {
      if (field.form !== description.follow_up.form) return single(field.name);
      if (field.kind === "date" && field.name !== visitDate) {  // progression: the earliest
        const found = rows.filter((row) => present(row[field.name]))
          .map((row) => String(row[field.name]));
        const dated = found.filter((text) => parseDate(field.name, text) !== null).sort();
        return dated.length ? dated[0] : null;
      }
      if (!visit) return null;
      return present(visit[field.name]) ? String(visit[field.name]) : null;
    };
    const dayZeroColumn = description.day_zero.column;
    const dayZeroText = single(dayZeroColumn);
    const dayZero = dayZeroText ? parseDate(dayZeroColumn, dayZeroText) : null;
    const integer = new RegExp(description.integer);
    const record = {};
    for (const field of description.fields) {
      if (field.kind === "codes") {
        const ticked = boxes.get(field.name);
        if (ticked === undefined) { record[field.registry_name] = null; continue; }
        const known = new Map(field.codes.map((c) => [c.code.toLowerCase(), c.value]));
        if ([...ticked].some((code) => !known.has(code))) problem(field.name, "unknown_box");
        record[field.registry_name] = [...known].filter(([code]) => ticked.has(code))
          .map(([, value]) => value);
        continue;
      }
      if (field.name === dayZeroColumn) {
        record[field.registry_name] = dayZero ? Number(dayZero.slice(0, 4)) : null;
        continue;
      }
      const text = valueOf(field);
      if (text === null) continue;
      if (field.kind === "date") {
        const when = parseDate(field.name, text);
        if (when !== null && dayZero !== null) {
          record[field.registry_name] = dayNumber(when) - dayNumber(dayZero);
        }
      } else if (field.kind === "code") {
        const found = field.codes.find((c) => c.code === text);
        if (!found) problem(field.name, "unknown_code");
        record[field.registry_name] = found ? found.value : null;
      } else if (integer.test(text.trim())) {
        const whole = BigInt(text.trim());
        record[field.registry_name] = whole >= BigInt(Number.MIN_SAFE_INTEGER) &&
          whole <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(whole) : whole;
      } else problem(field.name, "not_whole_number");
    }
    const kept = {};
    for (const [key, value] of Object.entries(record)) if (value !== null) kept[key] = value;
    return {record: kept, problems};
  }

  // build_record: the edge's problems first, then the registry's rules in the site's names
  function mergeProblems(problems, errors, description) {
    const siteName = new Map(description.fields.map((f) => [f.registry_name, f.name]));
    const registryName = new Map(description.fields.map((f) => [f.name, f.registry_name]));
    const reported = new Set(problems.map((p) => p.field));
    const merged = problems.slice();
    for (const error of errors) {
      const base = error.field.split(".")[0];
      const name = siteName.get(base) || base;
      if (reported.has(name)) continue;
      if (reported.has(description.day_zero.column) && name.endsWith("_date")) continue;
      merged.push({...error, field: name});
    }
    return merged.map((p) => ({...p, registry_field: registryName.get(p.field) || p.field}));
  }

  async function subjectId(key, prefix, recordId, pseudonym) {
    const digest = new Uint8Array(await crypto.subtle.sign("HMAC", key,
      new TextEncoder().encode(recordId)));
    let letters = "";
    for (const byte of digest) {
      letters += pseudonym.alphabet[byte >> 4] + pseudonym.alphabet[byte & 15];
    }
    return prefix + letters.slice(0, pseudonym.letters);
  }

  // --- talking to the console ------------------------------------------------------------
  class RegistryProblem extends Error {}

  async function post(url, records) {
    let answer;
    try {
      answer = await fetch(url, {
        method: "POST", credentials: "same-origin", redirect: "manual",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf,
                  [SOURCE_HEADER]: state.description.source},
        body: pyJson({records}),
      });
    } catch (error) {
      throw new RegistryProblem("the registry did not answer; check the connection and try again");
    }
    if (answer.type === "opaqueredirect" || answer.status === 401) {
      throw new RegistryProblem("your session has ended: sign in again in another tab, then " +
                                "check the file again");
    }
    let body = null;
    try { body = await answer.json(); } catch (error) { body = null; }
    if (!answer.ok || !body || !Array.isArray(body.results) ||
        body.results.length !== records.length) {
      const detail = body && body.detail ? ": " + body.detail : "";
      throw new RegistryProblem("the registry answered " + answer.status + detail +
                                (answer.status === 400 ? " (reload the page and try again)" : ""));
    }
    return body.results;
  }

  const chunks = (items, size) => {
    const found = [];
    for (let start = 0; start < items.length; start += size) {
      found.push(items.slice(start, start + size));
    }
    return found;
  };

  // --- the page ------------------------------------------------------------------------------
  const state = {description: null, report: null, toWrite: [], fileName: ""};

  function newReport(fileName, dryRun) {
    return {dry_run: dryRun, file: fileName, counts: {created: 0, updated: 0, unchanged: 0,
            invalid: 0, rows: 0, records: 0}, columns_dropped: 0, identifier_columns_dropped: 0,
            records: [], failure: null};
  }
  function add(report, rows, subject, outcome, details) {
    report.counts[outcome] += 1;
    if (outcome !== "unchanged") {
      report.records.push({rows, subject_id: subject, outcome, ...(details || {})});
    }
  }

  function say(id, text) { $(id).textContent = text; }
  function showProblem(text) {
    const box = $("upload-problem");
    box.textContent = text;
    box.hidden = !text;
    if (text) box.focus();
  }
  function setProgress(done, total, what) {
    const bar = $("upload-progress");
    bar.max = Math.max(total, 1);
    bar.value = done;
    say("upload-progress-text", what + ": " + done + " of " + total + " records");
  }

  function renderRefused(report) {
    const body = $("refused-rows");
    body.replaceChildren();
    // By the row of the file, as a person reads it down (the report keeps registry-submit's order)
    const refused = report.records.filter((line) => line.outcome === "invalid")
      .sort((a, b) => a.rows[0] - b.rows[0]);
    for (const line of refused) {
      for (const error of line.errors) {
        const tr = document.createElement("tr");
        const cells = [line.rows.join(", "), error.field, error.code, error.message,
                       line.refused_by === "registry" ? "the registry" : "this page"];
        cells.forEach((text, index) => {
          const td = document.createElement(index === 0 ? "th" : "td");
          if (index === 0) td.scope = "row";
          if (index === 2) {
            const code = document.createElement("code");
            code.textContent = text;
            td.append(code);
          } else td.textContent = text;
          if (index === 0) td.className = "num";
          tr.append(td);
        });
        body.append(tr);
      }
    }
    $("refused").hidden = refused.length === 0;
    say("refused-count", String(refused.length));
  }

  function downloadReport(report) {
    const link = $("report-download");
    if (link.href) URL.revokeObjectURL(link.href);
    const text = JSON.stringify(report, null, 2) + "\n";
    link.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
    link.download = (report.dry_run ? "dry-run-" : "submit-") +
      report.file.replace(/\.[^.]+$/, "") + ".json";
    link.hidden = false;
  }

  async function checkFile() {
    showProblem("");
    $("send").hidden = true;
    $("dry-run-result").hidden = true;
    $("sent-result").hidden = true;
    const file = $("file").files[0];
    const secret = $("secret").value;
    const prefix = $("prefix").value.trim();
    const description = state.description;
    if (!file) return showProblem("Choose or drop a spreadsheet first.");
    if (secret.length < description.pseudonym.secret_min_length) {
      return showProblem("The site secret must be at least " +
        description.pseudonym.secret_min_length + " characters: the one your site's REDCap " +
        "sync or registry-submit uses.");
    }
    if (!new RegExp(description.pseudonym.prefix).test(prefix)) {
      return showProblem("The subject id prefix must be a few letters, optionally ending in " +
                         "'-', '_' or '.' (e.g. TOR-), or empty.");
    }
    if (!window.crypto || !crypto.subtle) {
      return showProblem("This browser cannot compute the pseudonyms here (the console must be " +
                         "opened over https). Nothing was sent.");
    }
    $("check").disabled = true;
    const report = newReport(file.name, true);
    state.report = report;
    state.toWrite = [];
    try {
      const table = await readTable(file, description);
      const sheet = readSheet(table, $("date-order").value, description);
      report.columns_dropped = sheet.droppedColumns;
      report.identifier_columns_dropped = sheet.droppedIdentifierColumns;
      report.counts.rows = sheet.rowsRead;
      report.counts.records = sheet.rowsOf.size + sheet.rowsWithoutId.length;
      for (const number of sheet.rowsWithoutId) {
        add(report, [number], null, "invalid", {refused_by: "submit",
            errors: [{...description.problems.row_without_id}]});
      }
      const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret),
        {name: "HMAC", hash: "SHA-256"}, false, ["sign"]);
      const assembled = [];
      for (const [id, rows] of sheet.rowsOf) {
        const subject = await subjectId(key, prefix, id, description.pseudonym);
        const {record, problems} = assemble(rows, description);
        assembled.push({rows: sheet.rowNumbers.get(id), record: {subject_id: subject, ...record},
                        problems});
      }
      // The registry's rules, as registry-submit checks them before its dry run.
      const size = description.batch_size;
      const valid = [];
      let done = 0;
      setProgress(0, assembled.length, "Checking");
      for (const part of chunks(assembled, size)) {
        const results = await post(root.dataset.checkUrl, part.map((item) => item.record));
        part.forEach((item, index) => {
          const problems = mergeProblems(item.problems, results[index].errors, description);
          if (problems.length) {
            add(report, item.rows, item.record.subject_id, "invalid", {refused_by: "submit",
                errors: problems});
          } else valid.push(item);
        });
        setProgress(done += part.length, assembled.length, "Checking");
      }
      // The dry run: what the registry would do with each record, nothing written.
      done = 0;
      const would = {created: 0, updated: 0};
      setProgress(0, valid.length, "Dry run");
      for (const part of chunks(valid, size)) {
        const results = await post(root.dataset.batchUrl + "?dry_run=true",
                                   part.map((item) => item.record));
        part.forEach((item, index) => {
          const result = results[index];
          if (result.outcome === "rejected") {
            add(report, item.rows, item.record.subject_id, "invalid", {refused_by: "registry",
                errors: result.errors || []});
          } else if (result.outcome === "unchanged") {
            add(report, item.rows, item.record.subject_id, "unchanged");
          } else {
            would[result.outcome] = (would[result.outcome] || 0) + 1;
            state.toWrite.push({...item, wouldBe: result.outcome,
                                changed: Object.keys(result.changes || {}).sort()});
          }
        });
        setProgress(done += part.length, valid.length, "Dry run");
      }
      state.fileName = file.name;
      renderDryRun(report, would);
    } catch (error) {
      if (error instanceof FileProblem) {
        showProblem(file.name + " " + error.message + ". Nothing was sent.");
      } else if (error instanceof RegistryProblem) {
        showProblem("The check stopped: " + error.message + ". Nothing was written.");
      }
      else showProblem("The check stopped (" + error.name + "). Nothing was written.");
    } finally {
      $("check").disabled = false;
    }
  }

  function renderDryRun(report, would) {
    const dryReport = JSON.parse(JSON.stringify(report));
    for (const item of state.toWrite) {
      add(dryReport, item.rows, item.record.subject_id, item.wouldBe,
          item.wouldBe === "updated" ? {changed_fields: item.changed} : {});
    }
    say("dry-rows", String(report.counts.rows));
    say("dry-records", String(report.counts.records));
    say("dry-created", String(would.created || 0));
    say("dry-updated", String(would.updated || 0));
    say("dry-unchanged", String(report.counts.unchanged));
    say("dry-invalid", String(report.counts.invalid));
    const plural = report.columns_dropped === 1 ? "" : "s";
    say("dry-dropped", report.columns_dropped + " column" + plural +
        " not read (" + report.identifier_columns_dropped + " named like identifiers)");
    renderRefused(report);
    downloadReport(dryReport);
    $("dry-run-result").hidden = false;
    const count = state.toWrite.length;
    $("send").hidden = count === 0;
    say("send-button", "Send " + count + " record" + (count === 1 ? "" : "s") + " to the registry");
    say("nothing-to-send", count === 0 ? "Nothing to send: every record is either already in " +
        "the registry unchanged or refused." : "");
    $("dry-run-heading").focus();
  }

  async function send() {
    showProblem("");
    const report = state.report;
    report.dry_run = false;
    $("send-button").disabled = true;
    $("check").disabled = true;
    const size = state.description.batch_size;
    let done = 0;
    setProgress(0, state.toWrite.length, "Sending");
    try {
      for (const part of chunks(state.toWrite, size)) {
        const results = await post(root.dataset.batchUrl + "?dry_run=false",
                                   part.map((item) => item.record));
        part.forEach((item, index) => {
          const result = results[index];
          const outcome = result.outcome === "rejected" ? "invalid" : result.outcome;
          if (outcome === "invalid") {
            add(report, item.rows, item.record.subject_id, outcome, {refused_by: "registry",
                errors: result.errors || []});
          } else if (outcome === "updated") {
            add(report, item.rows, item.record.subject_id, outcome,
                {changed_fields: Object.keys(result.changes || {}).sort()});
          } else add(report, item.rows, item.record.subject_id, outcome);
        });
        setProgress(done += part.length, state.toWrite.length, "Sending");
      }
    } catch (error) {
      report.failure = error instanceof RegistryProblem ? error.message
        : "the page stopped (" + error.name + ")";
      showProblem("Sending stopped: " + report.failure + ". The records sent before it are " +
                  "stored; check the file again to see what is left.");
    }
    state.toWrite = [];
    $("send").hidden = true;
    $("send-button").disabled = false;
    $("check").disabled = false;
    say("sent-created", String(report.counts.created));
    say("sent-updated", String(report.counts.updated));
    say("sent-unchanged", String(report.counts.unchanged));
    say("sent-invalid", String(report.counts.invalid));
    renderRefused(report);
    downloadReport(report);
    $("sent-result").hidden = false;
    $("sent-heading").focus();
  }

  // --- wiring ------------------------------------------------------------------------------------
  const drop = $("drop-zone");
  const fileInput = $("file");
  const showFile = () => say("file-chosen", fileInput.files[0]
    ? "Chosen: " + fileInput.files[0].name : "No file chosen yet.");
  fileInput.addEventListener("change", showFile);
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) { fileInput.files = event.dataTransfer.files; showFile(); }
  });
  $("check").addEventListener("click", checkFile);
  $("send-button").addEventListener("click", send);
  // A new file, secret, prefix or date order makes the last dry run stale.
  for (const id of ["file", "secret", "prefix", "date-order"]) {
    $(id).addEventListener("input", () => { $("send").hidden = true; state.toWrite = []; });
  }
  fetch(root.dataset.fieldsUrl, {credentials: "same-origin"})
    .then((answer) => answer.ok ? answer.json() : Promise.reject(answer.status))
    .then((description) => { state.description = description; $("check").disabled = false; })
    .catch(() => showProblem("The page could not load the registry's field list; reload it."));
})();
