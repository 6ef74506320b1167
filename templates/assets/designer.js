// The designer's live preview, live checks and uploads. No dependencies; every form on the
// page also works without this script. User text only ever goes into textContent.
(() => {
  "use strict";
  const form = document.getElementById("design");
  if (!form) return;
  const sample = JSON.parse(document.getElementById("sample").textContent);
  const apple = document.getElementById("apple-card");
  const google = document.getElementById("google-card");
  const base = apple.dataset.base;
  const images = { icon: apple.dataset.icon, logo: apple.dataset.logo, strip: apple.dataset.strip };
  const stamp = { icon: "", logo: "", strip: "" };

  const val = (name) => {
    const el = form.elements.namedItem(name);
    return el && el.value !== undefined ? el.value.trim() : "";
  };
  const h = (tag, cls, text) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  };

  // Placeholders filled with the sample member, as the card will show them.
  const fill = (text) =>
    text.replace(/\{\{\s*([a-z_]+)\s*\}\}/g, (m, k) =>
      Object.prototype.hasOwnProperty.call(sample.values, k) && sample.values[k] !== null ? String(sample.values[k]) : m);

  const shown = (f) => {
    const raw = fill(f.value);
    const n = Number(raw);
    const numeric = raw !== "" && !Number.isNaN(n);
    try {
      if (f.format === "percent" && numeric) return new Intl.NumberFormat("en", { style: "percent" }).format(n);
      if (f.format === "currency" && numeric && /^[A-Z]{3}$/.test(f.currency.toUpperCase()))
        return new Intl.NumberFormat("en", { style: "currency", currency: f.currency.toUpperCase() }).format(n);
      if ((f.format === "date" || f.format === "date_time") && !Number.isNaN(Date.parse(raw))) {
        const d = new Date(raw);
        return f.format === "date"
          ? d.toLocaleDateString("en", { dateStyle: "medium", timeZone: "UTC" })
          : d.toLocaleString("en", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });
      }
      if (numeric && (f.format === "number" || /^\{\{\s*(balance|points_to_next_tier|next_expiry_points)\s*\}\}$/.test(f.value)))
        return new Intl.NumberFormat("en").format(n);
    } catch (_) { /* an unknown currency code: show the raw value */ }
    return raw;
  };

  const fields = (area) => {
    const out = [];
    for (let i = 0; form.elements.namedItem(`${area}.${i}.value`); i++) {
      const f = { label: val(`${area}.${i}.label`), value: val(`${area}.${i}.value`), format: val(`${area}.${i}.format`),
        currency: val(`${area}.${i}.currency`), align: val(`${area}.${i}.align`) };
      if (f.label || f.value) out.push(f);
    }
    return out;
  };

  // `#rgb`, `#rrggbb` or `rgb(r, g, b)` to a CSS colour; null when it is neither.
  const colour = (s) => {
    if (/^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(s)) return s;
    const m = /^rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)$/i.exec(s);
    return m && [m[1], m[2], m[3]].every((c) => Number(c) <= 255) ? `rgb(${m[1]}, ${m[2]}, ${m[3]})` : null;
  };
  const luminance = (css) => {
    const probe = h("span");
    probe.style.color = css;
    document.body.appendChild(probe);
    const [r, g, b] = getComputedStyle(probe).color.match(/\d+/g).map(Number);
    probe.remove();
    const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };

  const fieldBox = (f, cls) => {
    const box = h("div", `pf ${cls}`);
    if (f.align) box.style.textAlign = f.align === "natural" ? "start" : f.align;
    box.append(h("div", "pf-label", f.label), h("div", "pf-value", shown(f)));
    return box;
  };
  const img = (kind, cls, alt) => {
    const el = h("img", cls);
    el.src = `${base}${kind}@2x.png?v=${stamp[kind]}`;
    el.alt = alt;
    return el;
  };

  // The sample member's code in the chosen format, drawn by the server (`domain::barcode`, as
  // the card page draws it); a format the server could not draw shows its shape only.
  const barcodeBox = (cls) => {
    const format = val("barcode_format");
    const box = h("div", cls);
    const drawn = document.getElementById(`sample-barcode-${format}`);
    const svg = drawn ? drawn.content.querySelector("svg") : null;
    if (svg) {
      const code = h("div", "code-real");
      code.dataset.format = format;
      code.append(svg.cloneNode(true));
      box.append(code);
    } else {
      box.append(h("div", `code code-${format}`, ""));
    }
    box.firstChild.setAttribute("role", "img");
    box.firstChild.setAttribute("aria-label", `${format} barcode of ${sample.values.barcode}`);
    if (form.elements.namedItem("barcode_show").checked) {
      const alt = val("barcode_alt");
      box.append(h("div", "code-text", alt ? fill(alt) : sample.values.barcode));
    }
    return box;
  };

  function renderApple() {
    const bg = colour(val("color_background")) || "#3c414c";
    apple.style.background = bg;
    apple.style.color = colour(val("color_foreground")) || "#fff";
    apple.style.setProperty("--label", colour(val("color_label")) || "#ccc");
    const top = h("div", "ac-top");
    if (images.logo) top.append(img("logo", "ac-logo", "logo"));
    top.append(h("div", "ac-logo-text", val("logo_text")));
    const header = h("div", "ac-header");
    fields("header_fields").forEach((f) => header.append(fieldBox(f, "small")));
    top.append(header);
    const strip = h("div", "ac-strip" + (images.strip ? " with-strip" : ""));
    if (images.strip) strip.style.backgroundImage = `url("${base}strip@2x.png?v=${stamp.strip}")`;
    fields("primary_fields").forEach((f) => strip.append(fieldBox(f, "primary")));
    const sec = h("div", "ac-row");
    fields("secondary_fields").forEach((f) => sec.append(fieldBox(f, "small")));
    const aux = h("div", "ac-row");
    fields("auxiliary_fields").forEach((f) => aux.append(fieldBox(f, "small")));
    apple.replaceChildren(top, strip, sec, aux, barcodeBox("ac-barcode"));
  }

  function renderGoogle() {
    const bg = colour(val("color_background")) || "#3c414c";
    google.style.background = bg;
    // Google picks black or white text for the background itself.
    google.style.color = luminance(bg) > 0.45 ? "#202124" : "#fff";
    const head = h("div", "g-head");
    if (images.icon) head.append(img("icon", "g-logo", "program logo"));
    head.append(h("div", "g-issuer", sample.organization));
    // Google titles the card with the class's programName, whatever the Apple logo text says.
    const title = h("div", "g-title", sample.values.program_name);
    const row = h("div", "g-row");
    const balance = [...fields("primary_fields"), ...fields("secondary_fields"), ...fields("header_fields"), ...fields("auxiliary_fields")]
      .find((f) => /^\{\{\s*balance\s*\}\}$/.test(f.value));
    const points = h("div", "g-points");
    points.append(h("div", "g-label", (balance && balance.label ? balance.label : "Points").slice(0, 9)),
      h("div", "g-value", new Intl.NumberFormat("en").format(sample.values.balance)));
    const tier = h("div", "g-points");
    tier.append(h("div", "g-label", "Tier"), h("div", "g-value", sample.values.tier));
    row.append(points, tier);
    const name = h("div", "g-name", sample.values.member_name);
    const parts = [head, title, name, row, barcodeBox("g-barcode")];
    if (images.strip) parts.push(img("strip", "g-hero", "hero image"));
    google.replaceChildren(...parts);
  }

  // The back of the Apple card: the back fields, then the website and terms, as Wallet lists them.
  const appleBack = document.getElementById("apple-back");
  const backItems = () => {
    const items = fields("back_fields").map((f) => ({ label: f.label, value: shown(f) }));
    const web = val("info.website");
    if (web) items.push({ label: "Website", value: web });
    const terms = val("info.terms");
    if (terms) items.push({ label: "Terms and conditions", value: terms });
    return items;
  };
  function renderBack() {
    if (!appleBack) return;
    const list = h("dl", "ab-list");
    backItems().forEach((i) => list.append(h("dt", "ab-label", i.label), h("dd", "ab-value", i.value)));
    appleBack.replaceChildren(h("div", "ab-title", val("description") || "Card details"), list);
  }

  // Google's details view: titled with programName, the back fields as text modules.
  const googleDetails = document.getElementById("google-details");
  function renderDetails() {
    if (!googleDetails) return;
    const parts = [h("div", "gd-title", sample.values.program_name), h("div", "gd-issuer", sample.organization)];
    backItems().forEach((i) => {
      const m = h("div", "gd-module");
      m.append(h("div", "gd-header", i.label), h("div", "gd-body", i.value));
      parts.push(m);
    });
    googleDetails.replaceChildren(...parts);
  }

  const render = () => { renderApple(); renderBack(); renderGoogle(); renderDetails(); };

  // Live checks: the server runs the same checks as publishing, on the unsaved form.
  let timer = null;
  let sent = 0;
  async function runChecks() {
    const mine = ++sent;
    const body = new URLSearchParams(new FormData(form));
    try {
      const r = await fetch(form.dataset.check, { method: "POST", body, credentials: "same-origin" });
      if (!r.ok || mine !== sent) return;
      showChecks((await r.json()).findings);
    } catch (_) { /* offline: the server checks again on save */ }
  }
  function showChecks(findings) {
    document.querySelectorAll("#design [data-checks]").forEach((el) => el.replaceChildren());
    let errors = 0;
    for (const f of findings) {
      if (f.slot.startsWith("images.")) continue;
      const slot = form.querySelector(`[data-checks="${CSS.escape(f.slot)}"]`) || form.querySelector('[data-checks="general"]');
      slot.append(h("p", `check ${f.severity}`, f.message));
      if (f.severity === "error") errors++;
    }
    document.getElementById("error-count").textContent = `${errors} error(s) block publishing`;
  }
  const changed = () => {
    render();
    clearTimeout(timer);
    timer = setTimeout(runChecks, 250);
  };
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);

  // Placeholder pickers insert `{{name}}` at the cursor of their value input.
  form.querySelectorAll("select[data-insert]").forEach((sel) => {
    sel.addEventListener("change", () => {
      const input = form.elements.namedItem(sel.dataset.insert);
      if (!sel.value || !input) return;
      const at = input.selectionStart ?? input.value.length;
      input.value = `${input.value.slice(0, at)}{{${sel.value}}}${input.value.slice(input.selectionEnd ?? at)}`;
      sel.value = "";
      input.focus();
      changed();
    });
  });

  // Uploads go without a reload, so unsaved changes in the form stay.
  document.querySelectorAll("form.upload").forEach((up) => {
    up.addEventListener("submit", async (e) => {
      e.preventDefault();
      const kind = up.dataset.kind;
      const data = new FormData(up);
      if (e.submitter && e.submitter.name === "remove") data.set("remove", "1");
      const out = up.querySelector("[data-checks]");
      out.replaceChildren(h("p", "muted", "Uploading…"));
      const r = await fetch(up.action, { method: "POST", body: data, headers: { Accept: "application/json" }, credentials: "same-origin" });
      const j = await r.json().catch(() => ({ errors: ["the upload failed; PNG or JPEG, at most 5 MB"] }));
      out.replaceChildren(...(j.errors || []).map((m) => h("p", "check error", m)));
      if (r.ok) {
        images[kind] = data.has("remove") ? "" : "1";
        stamp[kind] = String(Date.now());
        document.getElementById(`img-${kind}-state`).textContent = images[kind] ? "In the draft." : "None yet.";
        render();
        runChecks();
      }
    });
  });

  // Publishing progress, until the job is done.
  const job = document.getElementById("job");
  if (job && job.dataset.status === "running") {
    const poll = setInterval(async () => {
      const r = await fetch(`/staff/publish-jobs/${job.dataset.job}`, { credentials: "same-origin" });
      if (!r.ok) return;
      const j = await r.json();
      const bar = document.getElementById("job-progress");
      bar.max = j.total;
      bar.value = j.done;
      document.getElementById("job-text").textContent = `${j.done} of ${j.total} · ${j.status}`;
      job.dataset.status = j.status;
      if (j.status !== "running") clearInterval(poll);
    }, 1000);
  }

  render();
})();
