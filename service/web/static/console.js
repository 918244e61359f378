// kefu operator console: plain JS, no build step. The admin token lives in sessionStorage (this tab only),
// goes out only as the Authorization header, and never in a URL. Every text from the API reaches the page
// through textContent (never as markup); plots are SVG elements built one by one.
"use strict";

(function () {
  const TOKEN = "kefu.console.token";
  const WHO = "kefu.console.who";
  const SVG = "http://www.w3.org/2000/svg";

  const REASON = {
    low_confidence: "置信度低",
    user_requested: "顾客要求",
    sensitive: "敏感",
    merchant: "商家问题",
    needs_order: "需查订单",
    empty_query: "空问题",
  };
  const KIND = { low_confidence: "置信度低转人工", abandoned_clarify: "澄清后放弃", voted_down: "👎" };
  const ACTION = { attach: "归入条目", out_of_scope: "超出范围", new_entry: "需要新条目", dismiss: "忽略" };
  const ACTION_LABEL = Object.assign({ confirm: "确认答对" }, ACTION); // `confirm` is recorded by kefu learn only
  const STATUS = { pending: "待生效", applied: "已生效", undone: "已撤销" };
  // A refused `kefu learn` run's losses, as the CLI words them, in the operators' words.
  const LOSS_WORDS = [
    ["learned dev, held out from the new rows", "学习样例（开发集，每条不含自身相似问）"],
    ["learned test", "学习样例（测试集）"],
    ["labelled test", "标注测试集"],
    ["answered precision", "回答准确率"],
    ["out-of-scope handoff recall", "范围外转人工召回率"],
  ];
  function lossText(loss) {
    return LOSS_WORDS.reduce((text, [en, zh]) => text.split(en).join(zh), loss);
  }
  const ROLE = { customer: "顾客", agent: "客服" };

  const $ = (id) => document.getElementById(id);
  const views = { queue: $("queue-view"), gaps: $("gaps-view"), decisions: $("decisions-view"), dash: $("dash-view") };
  let current = "queue";

  // --- storage (a tab with storage switched off keeps the token in memory only) -----------------------------
  const memory = {};
  function readSession(key) {
    try {
      return sessionStorage.getItem(key);
    } catch (e) {
      return memory[key] || null;
    }
  }
  function writeSession(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch (e) {
      if (value === null) delete memory[key];
      else memory[key] = value;
    }
  }

  // --- DOM helpers ------------------------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs || {})) node.setAttribute(k, String(attrs[k]));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  function status(text, isError) {
    const s = $("status");
    s.textContent = text || "";
    s.className = isError ? "status error" : "status";
  }
  function pct(v) {
    return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%";
  }
  function when(iso) {
    // "2026-12-06T10:31:02+0800" → "12-06 10:31"
    const m = /^\d{4}-(\d{2}-\d{2})T(\d{2}:\d{2})/.exec(String(iso || ""));
    return m ? m[1] + " " + m[2] : String(iso || "");
  }
  function whenUtc(iso) {
    // a decision's "2026-12-06T02:31:02Z" (UTC) → "12-06 10:31" in the browser's time zone
    const d = new Date(String(iso || ""));
    if (isNaN(d.getTime())) return String(iso || "");
    const two = (n) => String(n).padStart(2, "0");
    return two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " + two(d.getHours()) + ":" + two(d.getMinutes());
  }
  function since() {
    return $("since").value;
  }

  // --- the API ----------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // Relative URLs: the console works behind a path prefix, and only ever talks to its own server.
  async function api(path, body) {
    const token = readSession(TOKEN);
    if (!token) throw new ApiError(401, "请先登录");
    const init = { headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "连不上 kefu 服务，请检查网络后重试");
    }
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (!r.ok) {
      const msg = data && data.message ? data.message : "HTTP " + r.status;
      if (r.status === 401) logout("令牌不对或已更换，请重新登录");
      throw new ApiError(r.status, msg);
    }
    return data;
  }

  // --- log in / out -----------------------------------------------------------------------------------------
  function showApp(on) {
    $("login-view").hidden = on;
    $("tabs").hidden = !on;
    $("tools").hidden = !on;
    for (const name of Object.keys(views)) views[name].hidden = !on || name !== current;
  }

  function logout(message) {
    writeSession(TOKEN, null);
    showApp(false);
    status("");
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    writeSession(TOKEN, token);
    writeSession(WHO, $("who").value.trim() || null);
    $("login-button").disabled = true;
    try {
      const r = await api("admin/stats?since=1d&gaps=0"); // the cheapest call that needs the token
      // a shop's token reads its own stats there, and nothing else the console shows
      if (r && r.shop) throw new ApiError(403, "这是店铺 " + r.shop + " 的令牌；运营台需要平台的管理令牌（KEFU_ADMIN_TOKEN）");
      $("login-error").hidden = true;
      $("token").value = "";
      showApp(true);
      await load();
    } catch (e) {
      writeSession(TOKEN, null);
      const msg =
        e.status === 401 ? "令牌不对" : e.status === 404 ? "管理接口未开启：请在服务端设置 KEFU_ADMIN_TOKEN" : e.message;
      const err = $("login-error");
      err.textContent = msg;
      err.hidden = false;
      showApp(false);
    } finally {
      $("login-button").disabled = false;
    }
  });
  $("logout").addEventListener("click", () => logout(""));

  // --- tabs -------------------------------------------------------------------------------------------------
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      current = tab.dataset.view;
      for (const t of document.querySelectorAll(".tab")) t.setAttribute("aria-pressed", String(t === tab));
      showApp(true);
      load();
    });
  }
  $("refresh").addEventListener("click", () => load());
  $("since").addEventListener("change", () => load());

  async function load() {
    status("加载中…");
    try {
      if (current === "queue") await loadQueue();
      else if (current === "gaps") await loadGaps();
      else if (current === "decisions") await loadDecisions();
      else await loadDash();
      status("");
    } catch (e) {
      if (e.status !== 401) status("加载失败：" + e.message, true);
    }
  }

  // --- actions (a gap or a ticket) --------------------------------------------------------------------------
  // One action bar: an entry id (suggested ones in a list, any id may be typed) and the four decisions.
  let barCount = 0;
  function actionBar(suggested, onDecide) {
    const bar = el("div", "actions");
    const id = "entry-" + ++barCount;
    const label = el("label", "sr", "条目 id");
    label.htmlFor = id;
    const input = el("input", "entry");
    input.id = id;
    input.type = "text";
    input.placeholder = "条目 id";
    input.autocomplete = "off";
    input.spellcheck = false;
    const list = el("datalist");
    list.id = id + "-list";
    for (const n of suggested) {
      const opt = el("option");
      opt.value = n.id;
      opt.label = n.question;
      list.appendChild(opt);
    }
    input.setAttribute("list", list.id);
    if (suggested.length) input.value = suggested[0].id;
    bar.append(label, input, list);
    for (const action of Object.keys(ACTION)) {
      const b = el("button", action === "attach" ? "act primary" : "act", ACTION[action]);
      b.type = "button";
      b.dataset.action = action;
      b.addEventListener("click", async () => {
        const entry = input.value.trim();
        if (action === "attach" && !entry) {
          status("归入条目需要条目 id", true);
          input.focus();
          return;
        }
        for (const x of bar.querySelectorAll("button")) x.disabled = true;
        const body = { action, who: readSession(WHO) || "console", since: since() };
        if (action === "attach") body.entry = entry;
        try {
          const r = await api(...onDecide(body));
          const d = r.decision;
          status(
            "已记录决定 " + d.id + "：" + ACTION[d.action] + (d.entry ? " → " + d.entry : "") +
              "（" + d.messages + " 条消息；运行 kefu learn 后生效）"
          );
          onDone(bar, d);
        } catch (e) {
          if (e.status === 409 || e.status === 404) {
            status("这一项已经处理过了（可能是另一位同事）：" + e.message, true);
            onDone(bar, null);
          } else if (e.status !== 401) {
            status("没有记录：" + e.message, true);
            for (const x of bar.querySelectorAll("button")) x.disabled = false;
          }
        }
      });
      bar.appendChild(b);
    }
    return bar;
  }

  // A decided item leaves the gaps list; a ticket stays in the queue, marked.
  function onDone(bar, decision) {
    const gap = bar.closest(".gap");
    if (gap) {
      gap.remove();
      $("gaps-empty").hidden = $("gaps").children.length > 0;
      return;
    }
    const cell = bar.parentElement;
    clear(cell);
    cell.appendChild(el("span", "done", decision ? decided(decision) : "已处理"));
  }
  function decided(d) {
    return "已处理：" + ACTION[d.action] + (d.entry ? " → " + d.entry : "") + "（" + d.who + "）";
  }

  // --- the ticket queue -------------------------------------------------------------------------------------
  async function loadQueue() {
    const [h, ds] = await Promise.all([api("admin/handoffs?limit=100"), api("admin/decisions?limit=500")]);
    const byItem = {};
    for (const d of ds.decisions) if (d.status !== "undone" && !(d.item in byItem)) byItem[d.item] = d;
    const body = $("queue").querySelector("tbody");
    clear(body);
    for (const t of h.tickets) {
      const tr = el("tr", "ticket");
      tr.dataset.ticket = t.id;
      tr.appendChild(el("td", "when", when(t.created)));
      const reason = el("td", "reason");
      reason.appendChild(el("span", "badge " + t.reason, REASON[t.reason] || t.reason));
      if (t.shop) reason.appendChild(el("span", "shop", "店铺 " + t.shop));
      tr.appendChild(reason);
      const query = el("td", "query");
      query.appendChild(el("div", "text", t.query));
      if (t.history && t.history.length) query.appendChild(conversation(t.history));
      tr.appendChild(query);
      const cands = el("td", "cands");
      const suggested = [];
      for (const c of (t.candidates || []).slice(0, 3)) {
        const line = el("div", "cand");
        line.appendChild(el("code", "", c.id));
        line.appendChild(el("span", "score", Number(c.score).toFixed(3)));
        if (c.title) line.title = c.title;
        cands.appendChild(line);
        suggested.push({ id: c.id, question: c.title || c.id });
      }
      tr.appendChild(cands);
      const act = el("td", "act-cell");
      const d = byItem["ticket:" + t.id];
      if (d) act.appendChild(el("span", "done", decided(d)));
      else if (t.shop) act.appendChild(el("span", "muted", "店铺工单（由店铺处理）"));
      else act.appendChild(actionBar(suggested, (b) => ["admin/handoffs/" + encodeURIComponent(t.id) + "/resolve", b]));
      tr.appendChild(act);
      body.appendChild(tr);
    }
    $("queue-empty").hidden = h.tickets.length > 0;
  }

  // The conversation before a handoff, collapsed until the operator opens it: the session's earlier messages
  // (kefu saw them) and the turns the caller sent with the request.
  function conversation(turns) {
    const box = el("details", "history");
    box.appendChild(el("summary", "", "之前的对话（" + turns.length + " 条）"));
    const list = el("ol", "turns");
    for (const t of turns) {
      const li = el("li", "turn " + (t.role === "agent" ? "agent" : "customer"));
      li.appendChild(el("span", "role", ROLE[t.role] || t.role));
      li.appendChild(el("span", "said", t.text));
      if (t.source === "request") li.title = "来自接入方随请求发送的对话记录";
      list.appendChild(li);
    }
    box.appendChild(list);
    return box;
  }

  // --- decisions --------------------------------------------------------------------------------------------
  async function loadDecisions() {
    const r = await api("admin/decisions?limit=200");
    const body = $("decisions").querySelector("tbody");
    clear(body);
    // The last `kefu learn` was refused: say why, and mark the decisions whose new similar questions
    // took other entries' messages (where to look first).
    const refused = r.last_learn && r.last_learn.event === "refused" ? r.last_learn : null;
    const notice = $("learn-refused");
    notice.hidden = !refused;
    notice.textContent = refused
      ? "上次 kefu learn（" + whenUtc(refused.at) + "，" + refused.who + "）没有上线，待生效的决定仍未生效：" +
        refused.losses.map(lossText).join("；") + "。撤销有问题的决定后再运行；或用 kefu learn --examples-only 只把消息记作标注样例" +
        "（不加相似问）；或用 kefu learn --force 强制上线。"
      : "";
    const pulling = new Set(refused ? refused.pulling : []);
    for (const d of r.decisions) body.appendChild(decisionRow(d, pulling.has(d.id)));
    $("decisions-empty").hidden = r.decisions.length > 0;
  }

  function decisionRow(d, pulls) {
    const tr = el("tr", "decision");
    tr.dataset.decision = d.id;
    tr.appendChild(el("td", "when", whenUtc(d.at)));
    tr.appendChild(el("td", "", d.who));
    const what = el("td", "");
    what.appendChild(el("div", "", (ACTION_LABEL[d.action] || d.action) + (d.entry ? " → " + d.entry : "")));
    if (String(d.item).startsWith("ticket:")) what.appendChild(el("span", "shop", "工单 " + d.item.slice(7)));
    what.appendChild(el("code", "muted", d.id));
    tr.appendChild(what);
    tr.appendChild(el("td", "query", d.example + (d.messages > 1 ? "（共 " + d.messages + " 条）" : "")));
    const state = el("td", "");
    const badge = el("span", "badge state " + d.status, STATUS[d.status] || d.status);
    state.appendChild(badge);
    if (pulls && d.status === "pending") {
      state.appendChild(el("span", "badge pulls", "相似问会抢走其他条目的问题"));
    }
    tr.appendChild(state);
    const act = el("td", "act-cell");
    if (d.status === "pending") act.appendChild(undoButton(d, badge));
    tr.appendChild(act);
    return tr;
  }

  function undoButton(d, badge) {
    const b = el("button", "act", "撤销");
    b.type = "button";
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await api("admin/decisions/" + encodeURIComponent(d.id) + "/undo", { who: readSession(WHO) || "console" });
        status("已撤销决定 " + d.id + "：" + (ACTION_LABEL[d.action] || d.action) + "；这些消息回到待处理的列表");
        undone(b, badge);
      } catch (e) {
        if (e.status === 409) {
          status("这个决定已经撤销过了（可能是另一位同事）：" + e.message, true);
          undone(b, badge);
        } else if (e.status !== 401) {
          status("没有撤销：" + e.message, true);
          b.disabled = false;
        }
      }
    });
    return b;
  }
  function undone(button, badge) {
    badge.textContent = STATUS.undone;
    badge.className = "badge state undone";
    button.remove();
  }

  // --- gaps -------------------------------------------------------------------------------------------------
  function kinds(k) {
    return Object.keys(k || {})
      .map((x) => (KIND[x] || x) + " " + k[x])
      .join(" · ");
  }

  function gapItem(g) {
    const li = el("li", "gap");
    li.dataset.gap = g.id;
    const head = el("div", "gap-head");
    head.appendChild(el("span", "size", g.size + " 条"));
    head.appendChild(el("span", "kinds", kinds(g.kinds)));
    head.appendChild(el("span", "seen", when(g.first_seen) + " → " + when(g.last_seen)));
    head.appendChild(el("code", "gap-id", g.id));
    li.appendChild(head);
    const ex = el("ul", "examples");
    for (const e of g.examples) ex.appendChild(el("li", "", e));
    li.appendChild(ex);
    const near = el("div", "nearest");
    near.appendChild(el("span", "muted", "最接近的条目："));
    for (const n of g.nearest) {
      const c = el("span", "near");
      c.appendChild(el("code", "", n.id));
      c.appendChild(el("span", "", " " + n.question + " "));
      c.appendChild(el("span", "score", n.score.toFixed(3)));
      near.appendChild(c);
    }
    if (!g.nearest.length) near.appendChild(el("span", "muted", "无"));
    li.appendChild(near);
    li.appendChild(actionBar(g.nearest, (b) => ["admin/gaps/" + encodeURIComponent(g.id) + "/resolve", b]));
    return li;
  }

  async function loadGaps() {
    const r = await api("admin/gaps?limit=50&since=" + encodeURIComponent(since()));
    $("gaps-summary").textContent =
      r.messages + " 条未解决的消息（其中 " + r.decided + " 条已处理），按意思归成 " + r.clusters + " 组，大的在前。" +
      "归入条目：这些问法成为该条目的相似问法；超出范围：以后直接转人工；需要新条目：生成草稿。";
    const list = $("gaps");
    clear(list);
    for (const g of r.gaps) list.appendChild(gapItem(g));
    $("gaps-empty").hidden = r.gaps.length > 0;
  }

  // --- dashboard --------------------------------------------------------------------------------------------
  function tile(label, value, note) {
    const t = el("div", "tile");
    t.appendChild(el("div", "value", value));
    t.appendChild(el("div", "label", label));
    if (note) t.appendChild(el("div", "note", note));
    return t;
  }

  // A stacked bar per day. series: [{key, label, cls}]; rows: [{day, values: {key: n}}].
  function stackedBars(target, rows, series) {
    clear(target);
    const W = 560,
      H = 220,
      L = 40,
      B = 28,
      T = 10,
      R = 8;
    const max = Math.max(1, ...rows.map((r) => series.reduce((s, x) => s + (r.values[x.key] || 0), 0)));
    const plot = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "svg" });
    plot.appendChild(svg("title", {}, series.map((s) => s.label).join(" / ") + "，按天"));
    const ih = H - B - T;
    for (const f of [0, 0.5, 1]) {
      const y = T + ih - f * ih;
      plot.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
      plot.appendChild(svg("text", { x: L - 6, y: y + 4, class: "axis", "text-anchor": "end" }, Math.round(f * max)));
    }
    const n = Math.max(rows.length, 1);
    const slot = (W - L - R) / n;
    const bw = Math.max(2, Math.min(36, slot * 0.7));
    rows.forEach((r, i) => {
      let y = T + ih;
      const x = L + i * slot + (slot - bw) / 2;
      for (const s of series) {
        const v = r.values[s.key] || 0;
        if (!v) continue;
        const h = (v / max) * ih;
        y -= h;
        const rect = svg("rect", { x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: h.toFixed(1), class: s.cls });
        rect.appendChild(svg("title", {}, r.day + " " + s.label + " " + v));
        plot.appendChild(rect);
      }
      const every = Math.ceil(n / 8); // at most eight day labels, counted back from the last day
      if ((n - 1 - i) % every === 0) {
        plot.appendChild(svg("text", { x: (x + bw / 2).toFixed(1), y: H - 8, class: "axis", "text-anchor": "middle" }, r.day.slice(5)));
      }
    });
    target.appendChild(plot);
    const legend = el("div", "legend");
    for (const s of series) {
      const item = el("span", "key");
      item.appendChild(el("span", "swatch " + s.cls));
      item.appendChild(document.createTextNode(s.label));
      legend.appendChild(item);
    }
    target.appendChild(legend);
  }

  async function loadDash() {
    const r = await api("admin/stats?gaps=5&since=" + encodeURIComponent(since()));
    const t = r.total;
    const cal = r.calibration;
    $("calibration").textContent = cal
      ? "在线版本 " + cal.build + "：" + cal.line +
        (cal.answered_precision !== null
          ? "（回答准确率 " + pct(cal.answered_precision) + (cal.basis === "predicted" ? "，预测值" : "，dev 实测") + "）"
          : "")
      : "还没有在线的索引版本";
    const tiles = $("tiles");
    clear(tiles);
    const unserved = Object.values(r.unserved || {}).reduce((a, b) => a + b, 0);
    tiles.append(
      tile("问答总数", t.answers),
      tile("直接回答", pct(t.rates.answer), t.answer + " 次"),
      tile("澄清", pct(t.rates.clarify), t.clarify + " 次"),
      tile("转人工", pct(t.rates.handoff), t.handoff + " 次"),
      tile("问候与结束语", pct(t.rates.greeting), t.greeting + " 次"),
      tile("👍 占评价", pct(t.rates.up), "👍 " + t.up + " · 👎 " + t.down),
      tile("未解决消息", unserved, kinds(r.unserved))
    );
    const days = r.days.map((d) => ({ day: d.day, values: d }));
    stackedBars($("chart-decisions"), days, [
      { key: "answer", label: "回答", cls: "s-answer" },
      { key: "clarify", label: "澄清", cls: "s-clarify" },
      { key: "handoff", label: "转人工", cls: "s-handoff" },
      { key: "greeting", label: "问候与结束语", cls: "s-greeting" },
    ]);
    stackedBars($("chart-votes"), days, [
      { key: "up", label: "👍", cls: "s-up" },
      { key: "down", label: "👎", cls: "s-down" },
    ]);
    const body = $("reasons").querySelector("tbody");
    clear(body);
    const reasons = Object.keys(t.handoff_reasons);
    for (const k of reasons) {
      const tr = el("tr");
      tr.append(el("td", "", REASON[k] || k), el("td", "num", t.handoff_reasons[k]), el("td", "num", pct(t.handoff_rates[k])));
      body.appendChild(tr);
    }
    if (!reasons.length) {
      const tr = el("tr");
      const td = el("td", "muted", "没有转人工");
      td.colSpan = 3;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    const top = $("top-gaps");
    clear(top);
    for (const g of r.top_gaps || []) {
      const li = el("li");
      li.appendChild(el("span", "size", g.size + " 条 "));
      li.appendChild(el("span", "", g.examples.join(" / ")));
      top.appendChild(li);
    }
    if (!(r.top_gaps || []).length) top.appendChild(el("li", "muted", "没有未解决的问题"));
  }

  // --- start: a token from earlier in this tab logs straight in -------------------------------------------
  const who = readSession(WHO);
  if (who) $("who").value = who;
  if (readSession(TOKEN)) {
    showApp(true);
    load();
  } else {
    showApp(false);
  }
})();
