// The flag page's editors: environment tabs, a live split drawing, and structured editors
// for variants, targets and rules. Each writes the JSON text field a raw post sends, so the
// server checks exactly what it would check without script; "Raw JSON" shows those fields.
"use strict";
(() => {
  const TOTAL_WEIGHT = 100000; // variant weights are thousandths of a percent
  const RULE_OPS = ["in", "not_in", "starts_with", "ends_with", "contains"];
  const SPLIT_CLASSES = ["split-a", "split-b", "split-c", "split-d", "split-e", "split-f"];
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([name, value]) => {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    });
    children.forEach((child) => node.append(child));
    return node;
  }

  function parseJSON(text, fallback) {
    if (!text.trim()) return { ok: true, value: fallback };
    try { return { ok: true, value: JSON.parse(text) }; } catch (error) { return { ok: false, error: error.message }; }
  }

  // A value typed by the flag's kind: text without quotes, a true/false choice, a number, JSON.
  function valueInput(kind, value, className) {
    let input;
    if (kind === "boolean") {
      input = el("select", { class: className });
      ["true", "false"].forEach((option) => input.append(el("option", { value: option, text: option })));
      input.value = value === false ? "false" : "true";
    } else if (kind === "number") {
      input = el("input", { type: "number", step: "any", class: className });
      input.value = typeof value === "number" ? String(value) : "";
    } else if (kind === "string") {
      input = el("input", { type: "text", class: className });
      input.value = typeof value === "string" ? value : "";
    } else {
      input = el("input", { type: "text", class: className + " json-input" });
      input.value = value === undefined ? "" : JSON.stringify(value);
    }
    return input;
  }

  function readValue(kind, input) {
    const text = input.value;
    if (kind === "boolean") return { ok: true, value: text === "true" };
    if (kind === "string") return { ok: true, value: text };
    if (kind === "number") {
      const number = Number(text);
      return text.trim() && Number.isFinite(number) ? { ok: true, value: number } : { ok: false, error: "a number" };
    }
    return parseJSON(text, null);
  }

  function displayValue(kind, value) {
    return kind === "string" && typeof value === "string" ? value : JSON.stringify(value);
  }

  function percentText(number) {
    return String(Math.round(number * 1000) / 1000);
  }

  function drawSplit(panel, kind, defaultText) {
    const drawing = panel.querySelector(".split-drawing");
    const legend = panel.querySelector(".split-legend");
    if (!drawing || !legend) return;
    const enabled = panel.querySelector("input[name$='-enabled']").checked;
    const percentage = Number(panel.querySelector("input[name$='-percentage']").value);
    const valueField = panel.querySelector("[name$='-value']");
    const variants = parseJSON(panel.querySelector("textarea[name$='-variants']").value, []);
    const hasVariants = variants.ok && Array.isArray(variants.value) && variants.value.length > 0;
    // With variants the percentage is not used: say so by dimming it.
    panel.querySelector(".percentage-row").classList.toggle("inactive", hasVariants);
    let parts;
    if (!enabled) {
      parts = [[100, defaultText + " (default: the flag is off)"]];
    } else if (hasVariants) {
      parts = variants.value.map((v) => [(Number(v.weight) || 0) * 100 / TOTAL_WEIGHT, displayValue(kind, v.value)]);
    } else {
      // An empty value serves true for a boolean flag, the default otherwise (as SDKs do).
      const served = valueField.value.trim() ? valueField.value : kind === "boolean" ? "true" : defaultText;
      const share = Number.isFinite(percentage) ? Math.min(Math.max(percentage, 0), 100) : 0;
      parts = [[share, served]];
      if (share < 100) parts.push([100 - share, defaultText + " (default)"]);
    }
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "split-bar");
    svg.setAttribute("viewBox", "0 0 100 10");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "expected split");
    let x = 0;
    legend.replaceChildren();
    parts.forEach(([share, label], index) => {
      const rect = document.createElementNS(SVG, "rect");
      const css = SPLIT_CLASSES[index % SPLIT_CLASSES.length];
      rect.setAttribute("class", css);
      rect.setAttribute("x", String(x));
      rect.setAttribute("y", "0");
      rect.setAttribute("width", String(share));
      rect.setAttribute("height", "10");
      const title = document.createElementNS(SVG, "title");
      title.textContent = percentText(share) + " % → " + label;
      rect.append(title);
      svg.append(rect);
      x += share;
      legend.append(el("li", {}, el("span", { class: "swatch " + css }), percentText(share) + " % → " + label));
    });
    drawing.replaceChildren(svg);
  }

  // A list editor: rows of inputs, serialised into the JSON field on every change.
  function listEditor(box, kind, spec, onChange) {
    const field = document.getElementById(box.dataset.field);
    const legend = box.querySelector("legend");
    const table = el("table");
    const footer = el("div", { class: "list-footer" });
    const problem = el("div", { class: "row-error" });
    box.replaceChildren(legend, table, footer, problem);

    function write() {
      const items = [];
      const problems = [];
      table.querySelectorAll("tr.list-row").forEach((row, index) => {
        const item = spec.read(row);
        if (item.ok) items.push(item.value);
        else problems.push("row " + (index + 1) + ": " + item.error);
      });
      problem.textContent = problems.join("; ");
      box.querySelectorAll(".server-error").forEach((stale) => stale.remove()); // edited since
      if (!problems.length) field.value = JSON.stringify(items);
      if (spec.summary) spec.summary(footer, items);
      onChange();
    }

    function addRow(item) {
      const row = el("tr", { class: "list-row" });
      spec.cells(row, item).forEach((cell) => row.append(el("td", {}, cell)));
      const remove = el("button", { type: "button", class: "button remove-row", text: "Remove" });
      remove.addEventListener("click", () => { row.remove(); write(); });
      row.append(el("td", {}, remove));
      row.addEventListener("input", write);
      row.addEventListener("change", write);
      table.append(row);
    }

    function load() {
      const parsed = parseJSON(field.value, []);
      if (!parsed.ok || !Array.isArray(parsed.value)) {
        problem.textContent = "The raw JSON is not a list: edit it under Raw JSON.";
        return false;
      }
      table.replaceChildren();
      if (spec.header) table.append(spec.header());
      parsed.value.forEach(addRow);
      if (spec.summary) spec.summary(footer, parsed.value);
      problem.textContent = "";
      return true;
    }

    const add = el("button", { type: "button", class: "button add-row add-" + box.dataset.editor, text: spec.addLabel });
    add.addEventListener("click", () => { addRow(spec.blank()); write(); });
    footer.after(add);
    // What the server refused in this field, shown beside the editor too.
    const refused = field.closest(".raw-field").querySelector(".errorlist");
    if (refused) {
      const copy = refused.cloneNode(true);
      copy.classList.add("server-error");
      add.after(copy);
    }
    const loaded = load();
    return { load, loaded };
  }

  function header(...names) {
    return el("tr", {}, ...names.map((name) => el("th", { text: name })));
  }

  function editors(kind) {
    return {
      variants: {
        addLabel: "Add a variant",
        header: () => header("value", "weight (%)", ""),
        blank: () => ({ value: kind === "boolean" ? true : kind === "number" ? 0 : "", weight: 0 }),
        cells: (row, item) => {
          const weight = el("input", { type: "number", step: "0.001", min: "0", max: "100", class: "variant-weight" });
          weight.value = percentText((Number(item.weight) || 0) * 100 / TOTAL_WEIGHT);
          return [valueInput(kind, item.value, "variant-value"), weight];
        },
        read: (row) => {
          const value = readValue(kind, row.querySelector(".variant-value"));
          if (!value.ok) return { ok: false, error: "the value must be " + (value.error || "JSON") };
          const percent = Number(row.querySelector(".variant-weight").value);
          if (!Number.isFinite(percent) || percent < 0) return { ok: false, error: "a weight is a percentage" };
          return { ok: true, value: { value: value.value, weight: Math.round(percent * 1000) } };
        },
        summary: (footer, items) => {
          const total = items.reduce((sum, item) => sum + (Number(item.weight) || 0), 0);
          const ok = !items.length || total === TOTAL_WEIGHT;
          footer.replaceChildren(el("span", {
            class: "variant-total " + (ok ? "ok" : "bad"),
            text: items.length ? "Total: " + percentText(total * 100 / TOTAL_WEIGHT) + " %" + (ok ? "" : " (must be 100 %)") : "No variants: the percentage applies.",
          }));
        },
      },
      targets: {
        addLabel: "Add a target",
        header: () => header("unit ids (comma separated)", "value", ""),
        blank: () => ({ units: [], value: kind === "boolean" ? true : kind === "number" ? 0 : "" }),
        cells: (row, item) => {
          const units = el("input", { type: "text", class: "target-units vTextField" });
          units.value = (item.units || []).join(", ");
          return [units, valueInput(kind, item.value, "target-value")];
        },
        read: (row) => {
          const value = readValue(kind, row.querySelector(".target-value"));
          if (!value.ok) return { ok: false, error: "the value must be " + (value.error || "JSON") };
          const units = row.querySelector(".target-units").value.split(",").map((u) => u.trim()).filter(Boolean);
          return { ok: true, value: { units, value: value.value } };
        },
      },
      rules: {
        addLabel: "Add a rule",
        header: () => header("attribute", "operator", "values (comma separated)", "value", ""),
        blank: () => ({ attribute: "", op: "in", values: [], value: kind === "boolean" ? true : kind === "number" ? 0 : "" }),
        cells: (row, item) => {
          const attribute = el("input", { type: "text", class: "rule-attribute" });
          attribute.value = item.attribute || "";
          const op = el("select", { class: "rule-op" });
          RULE_OPS.forEach((name) => op.append(el("option", { value: name, text: name.replace("_", " ") })));
          op.value = item.op || "in";
          const values = el("input", { type: "text", class: "rule-values vTextField" });
          const all = item.values || [];
          // Text values are typed plainly; a list holding anything else stays JSON.
          values.value = all.every((v) => typeof v === "string") ? all.join(", ") : JSON.stringify(all);
          return [attribute, op, values, valueInput(kind, item.value, "rule-value")];
        },
        read: (row) => {
          const value = readValue(kind, row.querySelector(".rule-value"));
          if (!value.ok) return { ok: false, error: "the value must be " + (value.error || "JSON") };
          const text = row.querySelector(".rule-values").value.trim();
          let values;
          if (text.startsWith("[")) {
            const parsed = parseJSON(text, []);
            if (!parsed.ok || !Array.isArray(parsed.value)) return { ok: false, error: "values must be a JSON list" };
            values = parsed.value;
          } else {
            values = text.split(",").map((v) => v.trim()).filter(Boolean);
          }
          return {
            ok: true,
            value: { attribute: row.querySelector(".rule-attribute").value.trim(), op: row.querySelector(".rule-op").value, values, value: value.value },
          };
        },
      },
    };
  }

  function setUpPanel(panel, kind, defaultText) {
    const redraw = () => drawSplit(panel, kind, defaultText);
    const specs = editors(kind);
    const loaded = [];
    panel.querySelectorAll(".list-editor").forEach((box) => {
      loaded.push(listEditor(box, kind, specs[box.dataset.editor], redraw));
    });
    panel.addEventListener("input", redraw);
    panel.addEventListener("change", redraw);
    const toggle = panel.querySelector(".raw-toggle");
    toggle.addEventListener("click", () => {
      const showingRaw = panel.classList.contains("show-raw");
      if (showingRaw && !loaded.every((editor) => editor.load())) return; // stay on the raw text
      panel.classList.toggle("show-raw", !showingRaw);
      toggle.setAttribute("aria-pressed", String(!showingRaw));
      toggle.textContent = showingRaw ? "Raw JSON" : "Structured editors";
      redraw();
    });
    // Text the editors cannot show (not a JSON list) is opened raw, to be fixed there.
    if (!loaded.every((editor) => editor.loaded)) toggle.click();
    redraw();
  }

  function setUpTabs(group) {
    const tabs = Array.from(group.querySelectorAll(".env-tab"));
    const select = (tab) => {
      tabs.forEach((other) => {
        const active = other === tab;
        other.classList.toggle("active", active);
        other.setAttribute("aria-selected", String(active));
        document.getElementById(other.dataset.panel).classList.toggle("active", active);
      });
    };
    tabs.forEach((tab) => tab.addEventListener("click", () => {
      select(tab);
      history.replaceState(null, "", "#" + tab.id.replace("env-tab-", "env-"));
    }));
    const wanted = location.hash.startsWith("#env-") ? document.getElementById("env-tab-" + location.hash.slice(5)) : null;
    select(group.querySelector(".env-tab.has-errors") || wanted || tabs[0]);
    group.classList.add("js-tabs");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const group = document.querySelector(".flag-states");
    if (!group) return;
    const kind = group.dataset.kind;
    const defaultText = group.dataset.default;
    group.classList.add("js-editors");
    group.querySelectorAll(".env-panel").forEach((panel) => setUpPanel(panel, kind, defaultText));
    setUpTabs(group);
  });
})();
