// The labeling page. Model text only ever reaches the page through textContent: never as markup.
"use strict";
const KEYS = {
  pairwise: [["1", "a", "A is better"], ["2", "b", "B is better"], ["3", "tie", "tie"]],
  thumbs: [["1", "up", "thumbs up"], ["2", "down", "thumbs down"]],
  rating: [["1", "1", "1"], ["2", "2", "2"], ["3", "3", "3"], ["4", "4", "4"], ["5", "5", "5"]],
};
const ALIASES = { a: "1", b: "2", t: "3", u: "1", d: "2" };
let current = null;
let busy = false;

const $ = (id) => document.getElementById(id);

function setCounts(data) {
  $("pending").textContent = String(data.pending ?? data.queue_depth ?? 0);
  $("mine").textContent = String(data.mine ?? 0);
  if (data.annotator) $("annotator").textContent = data.annotator;
}

// A conversation or an episode shows turn by turn (role, then content); plain text as one block. Text only.
function showTurns(box, turns, text) {
  box.replaceChildren();
  turns = Array.isArray(turns) && turns.length ? turns : null;
  if (!turns) {
    const pre = document.createElement("pre");
    pre.textContent = text ?? "";
    box.appendChild(pre);
    return;
  }
  for (const turn of turns) {
    const div = document.createElement("div");
    div.className = "turn";
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = String(turn.role);
    const content = document.createElement("pre");
    content.textContent = String(turn.content);
    div.append(role, content);
    box.appendChild(div);
  }
}

function render(item) {
  current = item;
  if (!item) {
    $("item").hidden = true;
    $("status").textContent = "Nothing to label right now; new items appear automatically.";
    return;
  }
  $("status").textContent = "Item " + item.id;
  showTurns($("prompt"), item.turns, item.prompt);
  showTurns($("a"), item.a_turns, item.a);
  $("b-box").hidden = item.task !== "pairwise";
  showTurns($("b"), item.b_turns, item.b);
  $("label-a").textContent = item.task === "pairwise" ? "A" : "Completion";
  const buttons = $("buttons");
  buttons.replaceChildren();
  for (const [key, choice, text] of KEYS[item.task]) {
    const btn = document.createElement("button");
    btn.textContent = text + " [" + key + "]";
    btn.dataset.choice = choice;
    btn.addEventListener("click", () => submit(choice));
    buttons.appendChild(btn);
  }
  const skip = document.createElement("button");
  skip.textContent = "skip [s]";
  skip.addEventListener("click", () => skipItem());
  buttons.appendChild(skip);
  $("help").textContent = "Keys: " + KEYS[item.task].map(([k, , t]) => k + " = " + t).join(", ") + ", s = skip";
  $("item").hidden = false;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const resp = await fetch(path, { credentials: "same-origin", ...opts });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

async function loadNext() {
  const data = await api("/api/next");
  setCounts(data);
  render(data.item);
}

async function submit(choice) {
  if (!current || busy) return;
  busy = true;
  try {
    await api("/api/label", { item_id: current.id, choice: choice });
    await loadNext();
  } catch (e) {
    $("status").textContent = "Error: " + e.message;
  } finally {
    busy = false;
  }
}

async function skipItem() {
  if (!current || busy) return;
  busy = true;
  try {
    await api("/api/skip", { item_id: current.id });
    await loadNext();
  } finally {
    busy = false;
  }
}

document.addEventListener("keydown", (ev) => {
  if (!current || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ALIASES[ev.key.toLowerCase()] ?? ev.key;
  if (key === "s" || key === "S") { skipItem(); return; }
  const hit = KEYS[current.task].find(([k]) => k === key);
  if (hit) submit(hit[1]);
});

// Poll: the live pending count, and a new item when the queue was empty.
setInterval(async () => {
  try {
    if (!current && !busy) await loadNext();
    else setCounts(await api("/api/stats"));
  } catch (e) { /* keep polling */ }
}, 2000);

loadNext().catch((e) => { $("status").textContent = "Error: " + e.message; });
