// liaotian page: a streaming chat box (OpenAI chunk format over SSE) and an attribution heat map.
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];            // [{role, content}] sent with every request
let lastReply = null;          // {messages, reply} for "Explain last reply"

const keyInput = $("apikey");
keyInput.value = localStorage.getItem("liaotian-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("liaotian-key", keyInput.value));

function headers() {
  const h = { "Content-Type": "application/json" };
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  return h;
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function errorText(resp) {
  try { const j = await resp.json(); return `${resp.status}: ${j.error ? j.error.message : JSON.stringify(j)}`; }
  catch (e) { return `${resp.status} ${resp.statusText}`; }
}

// Parse `data: ...` events out of a fetch body; calls onEvent(json) per chunk until [DONE].
async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

// The model window: count the message's tokens (server-side tokenizer) as the user types, show what
// the window leaves for it with max_tokens reserved for the reply, and cap the input to that.
let windowInfo = null;   // {tokens, context_window, max_tokens, max_input_tokens}
let countTimer = null;
async function countTokens() {
  const text = $("msg").value;
  try {
    const resp = await fetch("/v1/tokenize", { method: "POST", headers: headers(),
      body: JSON.stringify({ text, max_tokens: Number($("max_tokens").value) || undefined }) });
    if (!resp.ok) { $("window").textContent = await errorText(resp); return; }
    windowInfo = await resp.json();
  } catch (e) { return; }
  const w = windowInfo;
  $("msg").maxLength = Math.max(1, w.max_input_tokens);  // at least one character per token here
  const over = w.tokens > w.max_input_tokens;
  $("window").textContent = `${w.tokens} / ${w.max_input_tokens} tokens for the message (window ${w.context_window} ` +
    `tokens, ${w.max_tokens} kept for the reply)` + (over ? " — too long: shorten it or lower max_tokens" : "");
  $("window").classList.toggle("over", over);
  $("send").disabled = over;
}
function scheduleCount() { clearTimeout(countTimer); countTimer = setTimeout(countTokens, 120); }
$("msg").addEventListener("input", scheduleCount);
$("max_tokens").addEventListener("change", scheduleCount);
keyInput.addEventListener("change", scheduleCount);
countTokens();

$("chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("msg").value.trim();
  if (!text) return;
  $("msg").value = "";
  $("send").disabled = true;
  history.push({ role: "user", content: text });
  addTurn("user", text);
  const out = addTurn("assistant", "");
  out.classList.add("pending");
  const body = {
    messages: history.slice(-32), stream: true,
    temperature: Number($("temperature").value), top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value),
  };
  if ($("rerank").checked) body.rerank = true;
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!resp.ok) throw new Error(await errorText(resp));
    let reply = "";
    await readSSE(resp, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);  // a stream that failed after it began
      for (const c of chunk.choices || []) {
        if (c.index === 0 && c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; }
        if (c.index === 0 && c.finish_reason) out.dataset.finish = c.finish_reason;
      }
    });
    out.classList.remove("pending");
    out.classList.add("done");
    if (reply.trim()) {
      lastReply = { messages: history.slice(-32), reply };
      history.push({ role: "assistant", content: reply });
    } else {
      out.textContent = "(empty reply)";
      history.pop();  // keep the history alternating and non-empty
    }
    $("explain-last").disabled = !lastReply;
  } catch (e) {
    out.className = "turn error";
    out.textContent = String(e.message || e);
    history.pop();
  } finally {
    $("send").disabled = false;
    $("msg").focus();
    countTokens();
  }
});

// The colour of a score: white -> red (positive: pushes toward the explained outcome) or white -> blue
// (negative: against it) with |score| / max |score| (serve/explain.py uses the same rule).
function heat(score, scale) {
  const w = scale > 0 ? Math.min(1, Math.abs(score) / scale) : 0;
  const fade = Math.round(255 * (1 - 0.85 * w));
  return score >= 0 ? `rgb(255, ${fade}, ${fade})` : `rgb(${fade}, ${fade}, 255)`;
}

// What the colours mean for this result (the same sentence as `legend` in serve/explain.py).
function legend(result) {
  let toward = "toward the explained output";
  if (result.reply_tokens) toward = "toward the reply (its log-probability)";
  else if (result.label !== undefined && result.label !== null) toward = `toward the predicted class «${result.label_name ?? result.label}»`;
  return `red: pushes ${toward}; blue: pushes against it; deeper colour = larger |score|`;
}

// The classifier's quality as training stored it at export (the same wording as serve/explain.py).
function quality(metrics) {
  if (!metrics) return "test accuracy not recorded in the model directory (trained before it was stored)";
  return Object.entries(metrics).map(([k, v]) => `${k.replace(/^test_/, "").replace(/_/g, " ")} ${Number(v).toFixed(3)}`)
    .join(", ") + " on its test split";
}

function renderHeatmap(result) {
  const box = $("heatmap");
  box.textContent = "";
  const scale = Math.max(0, ...result.scores.map(Math.abs));
  result.tokens.forEach((tok, i) => {
    const s = result.scores[i];
    const span = document.createElement("span");
    span.className = "tok" + (s < 0 ? " neg" : "") + (/^\[.*\]$/.test(tok) ? " special" : "");
    span.style.background = heat(s, scale);
    span.title = `${tok}  ${s.toFixed(4)}`;
    span.textContent = tok;
    box.appendChild(span);
  });
  if (result.reply_tokens) {
    box.appendChild(Object.assign(document.createElement("span"), { className: "sep" }));
    const r = document.createElement("span");
    r.className = "reply";
    r.title = "the reply being explained";
    r.textContent = "→ " + result.reply_tokens.join("");
    box.appendChild(r);
  }
  const rows = [["colours", legend(result)]];
  if (result.label !== undefined && result.label !== null)
    rows.push(["prediction", `${result.label_name ?? result.label} (p = ${Number(result.probability).toFixed(3)})`],
              ["classifier", quality(result.test_metrics)]);
  rows.push(["F(x)", result.f_x.toFixed(4)], ["F(baseline)", result.f_baseline.toFixed(4)],
            ["Σ scores", result.scores.reduce((a, b) => a + b, 0).toFixed(4)], ["delta", result.delta.toExponential(2)],
            ["settings", `${result.method}, ${result.steps} steps, ${result.baseline} baseline`]);
  const meta = $("explain-meta");
  meta.textContent = "";
  const table = document.createElement("table");
  for (const [k, v] of rows) {
    const tr = table.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v;
  }
  meta.appendChild(table);
  box.dataset.ready = "1";
}

async function explain(body) {
  $("heatmap").dataset.ready = "";
  $("heatmap").textContent = "…";
  try {
    const resp = await fetch("/v1/attributions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!resp.ok) throw new Error(await errorText(resp));
    renderHeatmap(await resp.json());
  } catch (e) {
    $("heatmap").textContent = "";
    $("explain-meta").textContent = String(e.message || e);
  }
}

$("explain-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("explain-text").value.trim();
  if (text) explain({ text });
});
$("explain-last").addEventListener("click", () => { if (lastReply) explain(lastReply); });
