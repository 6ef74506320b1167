// The cashier page: find a card by its code (typed, or read by the camera where the browser
// has BarcodeDetector), then record a purchase or a redemption after a confirmation. Each
// operation gets one idempotency key when it is prepared; retries and double taps reuse it, so
// the server posts it once. Paying with points reserves them first (a hold), then the cashier
// confirms (the hold is captured) or cancels (it is voided); an abandoned hold lapses.
(() => {
  "use strict";
  const root = document.getElementById("scan");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const $ = (id) => document.getElementById(id);
  let member = null;
  let pending = null; // {path, body, cancel?} of the operation awaiting confirmation or a retry
  let inFlight = false;

  const say = (el, text, kind) => {
    const p = document.createElement("p");
    p.className = `check ${kind}`;
    p.textContent = text;
    $(el).replaceChildren(p);
  };
  const post = async (path, body) => {
    const r = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...body, csrf }),
      credentials: "same-origin",
    });
    let j = {};
    try { j = await r.json(); } catch (_) { /* an empty body */ }
    return { ok: r.ok, status: r.status, body: j };
  };
  const key = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`);

  function show(m) {
    member = m;
    $("member").hidden = false;
    $("member-name").textContent = m.name;
    $("member-points").textContent = new Intl.NumberFormat().format(m.points);
    $("member-available").textContent = new Intl.NumberFormat().format(m.available ?? m.points);
    $("member-tier").textContent = m.tier || "—";
    $("member-expiry").textContent = m.next_expiry ? `${m.next_expiry.points} points on ${m.next_expiry.date}` : "—";
  }

  async function find(code) {
    $("lookup-msg").replaceChildren();
    const r = await post("/scan/lookup", { barcode: code });
    if (!r.ok) {
      $("member").hidden = true;
      member = null;
      say("lookup-msg", r.body.error || "the lookup failed; try again", "error");
      return;
    }
    $("op-msg").replaceChildren();
    show(r.body.member);
  }
  $("lookup").addEventListener("submit", (e) => { e.preventDefault(); find($("barcode").value.trim()); });

  // Minor units from what the cashier typed: "12.5", "12,50" and "12" all work.
  const minor = (text) => {
    const t = text.trim().replace(",", ".");
    if (!/^\d+(\.\d{1,2})?$/.test(t)) return null;
    const [whole, frac = ""] = t.split(".");
    return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
  };

  function prepare(text, body) {
    pending = { path: `/scan/members/${member.id}/operations`, body: { ...body, key: key() } };
    $("confirm-text").textContent = text;
    $("confirm").hidden = false;
    $("confirm-yes").focus();
  }
  $("purchase").addEventListener("submit", (e) => {
    e.preventDefault();
    const amount = minor($("amount").value);
    if (!amount) return say("op-msg", "enter the amount like 12.50", "error");
    prepare(`Record a purchase of ${(amount / 100).toFixed(2)} for ${member.name}?`, { kind: "purchase", amount_minor: amount });
  });
  $("redeem").addEventListener("submit", (e) => {
    e.preventDefault();
    const points = Number($("redeem-points").value.trim());
    if (!Number.isInteger(points) || points <= 0) return say("op-msg", "enter the points as a whole number", "error");
    prepare(`Redeem ${points} points from ${member.name}?`, { kind: "redeem", points });
  });
  $("pay").addEventListener("submit", async (e) => {
    e.preventDefault();
    const points = Number($("pay-points").value.trim());
    if (!Number.isInteger(points) || points <= 0) return say("op-msg", "enter the points as a whole number", "error");
    const r = await post(`/scan/members/${member.id}/holds`, { points, key: key() });
    if (!r.ok) return say("op-msg", r.body.error || `refused (${r.status})`, "error");
    member.available = (member.available ?? member.points) - points;
    show(member);
    pending = {
      path: `/scan/holds/${r.body.hold_id}/capture`,
      body: { key: key() },
      cancel: `/scan/holds/${r.body.hold_id}/void`,
    };
    $("confirm-text").textContent = `${points} points are reserved. Pay ${points} points for ${member.name}?`;
    $("confirm").hidden = false;
    $("confirm-yes").focus();
  });
  $("confirm-no").addEventListener("click", async () => {
    const cancel = pending && pending.cancel;
    pending = null;
    $("confirm").hidden = true;
    if (cancel) {
      const r = await post(cancel, {});
      if (r.ok) {
        member.available = r.body.available;
        show(member);
        say("op-msg", "Cancelled: the points are released.", "ok");
      } else {
        say("op-msg", r.body.error || "releasing the points failed; they lapse in 10 minutes", "warning");
      }
    }
  });
  $("confirm-yes").addEventListener("click", async () => {
    if (!pending || inFlight) return;
    inFlight = true;
    $("confirm-yes").disabled = true;
    try {
      const r = await post(pending.path, pending.body);
      if (r.ok) {
        const b = r.body;
        member.points = b.balance;
        member.available = b.available ?? b.balance;
        if (b.tier !== undefined) member.tier = b.tier;
        show(member);
        const moved = b.points >= 0 ? `+${b.points}` : `${b.points}`;
        say("op-msg", `Done: ${moved} points. New balance: ${new Intl.NumberFormat().format(b.balance)}.`, "ok");
        pending = null;
        $("confirm").hidden = true;
        $("amount").value = "";
        $("redeem-points").value = "";
        $("pay-points").value = "";
      } else if (r.status >= 500 || r.status === 0) {
        say("op-msg", "no answer from the server; press Confirm again to retry (it will not post twice)", "warning");
      } else {
        say("op-msg", r.body.error || `refused (${r.status})`, "error");
        pending = null;
        $("confirm").hidden = true;
      }
    } catch (_) {
      say("op-msg", "the connection dropped; press Confirm again to retry (it will not post twice)", "warning");
    } finally {
      inFlight = false;
      $("confirm-yes").disabled = false;
    }
  });

  // The camera, where the browser can read barcodes itself.
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    const cam = $("camera");
    cam.hidden = false;
    cam.addEventListener("click", async () => {
      const detector = new window.BarcodeDetector({ formats: ["qr_code", "pdf417", "aztec", "code_128"] });
      const video = $("video");
      try {
        video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      } catch (_) {
        return say("lookup-msg", "the camera is not available; type the code instead", "warning");
      }
      video.hidden = false;
      await video.play();
      const tick = async () => {
        const codes = await detector.detect(video).catch(() => []);
        if (codes.length) {
          video.srcObject.getTracks().forEach((t) => t.stop());
          video.hidden = true;
          $("barcode").value = codes[0].rawValue;
          find(codes[0].rawValue);
        } else {
          requestAnimationFrame(tick);
        }
      };
      tick();
    });
  }
})();
