// kefu chat page: plain JS, no build step. Every text from the API or the shopper goes into the page
// through textContent (never innerHTML), so an answer or a query containing markup is shown as text.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  // A shop's chat (?shop=acme-shoes, the widget's data-kefu-shop): answered from that shop's KB with the
  // platform's help center beside it, and remembered apart from the platform's conversation.
  const SHOP_RE = /^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/;
  const shop = params.get("shop");
  const STORE = "kefu.chat.v1" + (shop ? "." + shop : ""); // {session_id, items, votes}: a reload restores it
  const ELDER = "kefu.elder"; // "1" when 长辈模式 is on
  const MAX_ITEMS = 80; // transcript kept in localStorage
  const SESSION_RE = /^[A-Za-z0-9_-]{1,64}$/;

  const HANDOFF_REASON = {
    user_requested: "已按您的要求转接人工客服",
    sensitive: "这个问题需要人工客服为您处理",
    merchant: "商家（卖家）的问题由人工客服为您处理，已为您转接",
    needs_order: "这个问题需要查看您的订单，已为您转接人工客服",
    low_confidence: "这个问题我还不能确定答案，已为您转接人工客服",
  };
  // Until GET v1/welcome answers (or if it cannot): the greeting without the KB's example questions.
  let welcome = { message: "您好！我是智能客服，请直接描述您遇到的问题。", examples: [] };
  const HUMAN_HINT = "需要人工帮助时，随时点下方的「转人工」。";

  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const form = $("composer");
  const input = $("q");
  const sendButton = $("send");
  const root = document.documentElement;
  const embedded = params.get("embed") === "1";

  // --- storage (a page with storage switched off still chats, it only forgets on reload) ---------------
  function readStore(key) {
    try {
      return localStorage.getItem(key);
    } catch (e) {
      return null;
    }
  }
  function writeStore(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (e) {
      /* storage full or disabled: keep going without it */
    }
  }
  function loadState() {
    try {
      const s = JSON.parse(readStore(STORE) || "null");
      if (s && Array.isArray(s.items) && typeof s.votes === "object" && s.votes !== null) {
        if (!(typeof s.session_id === "string" && SESSION_RE.test(s.session_id))) s.session_id = null;
        return s;
      }
    } catch (e) {
      /* a damaged transcript starts a new conversation */
    }
    return { session_id: null, items: [], votes: {} };
  }
  let state = loadState();
  function save() {
    state.items = state.items.slice(-MAX_ITEMS);
    writeStore(STORE, JSON.stringify(state));
  }

  // --- DOM helpers ----------------------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }
  function note(text, isError) {
    const n = el("p", isError ? "note error" : "note", text);
    n.setAttribute("role", isError ? "alert" : "status");
    log.appendChild(n);
    scrollDown();
    return n;
  }

  function sourceLabel(item) {
    const src = item.source || {};
    if (src.kind === "faq") return "来源：常见问题「" + item.title + "」" + (src.section ? " · " + src.section : "");
    // A document item's title names it (《退货规范》第三条); its section path starts with the
    // document's title and ends with that clause or heading: show the chapters in between.
    const middle = String(src.section || "").split(" › ").slice(1, -1);
    return "来源：" + item.title + (middle.length ? " · " + middle.join(" › ") : "");
  }

  // The rules clauses an FAQ answer rests on, so a shopper can check them.
  function citesLine(item) {
    const labels = (item.cites || []).map((c) => c.label);
    return labels.length ? el("p", "cites", "依据：" + labels.join("、")) : null;
  }

  // Only what the page shows is kept (the trace is large and for operators).
  function slim(a) {
    const item = (x) => ({ id: x.id, title: x.title, text: x.text, source: x.source, cites: x.cites || [] });
    return {
      answer_id: a.answer_id,
      session_id: a.session_id,
      decision: a.decision,
      reason: a.reason,
      message: a.message,
      answers: (a.answers || []).map(item),
      suggestions: (a.suggestions || []).map(item),
      handoff: a.handoff ? { ticket_id: a.handoff.ticket_id, message: a.handoff.message } : null,
    };
  }

  // --- rendering ------------------------------------------------------------------------------------------
  function renderUser(text) {
    const row = el("div", "msg user");
    row.appendChild(el("p", "bubble", text));
    log.appendChild(row);
  }

  function relatedList(title, items) {
    const box = el("div", "related");
    box.appendChild(el("p", "related-title", title));
    for (const it of items) {
      const d = el("details");
      d.appendChild(el("summary", null, it.title));
      d.appendChild(el("p", "text", it.text));
      d.appendChild(el("p", "source", sourceLabel(it)));
      const cited = citesLine(it);
      if (cited) d.appendChild(cited);
      box.appendChild(d);
    }
    return box;
  }

  function renderBot(a) {
    const row = el("div", "msg bot");
    const card = el("article", "card " + a.decision);
    card.dataset.decision = a.decision;
    if (a.reason) card.dataset.reason = a.reason;
    if (a.answer_id) card.dataset.answerId = a.answer_id;

    if (a.decision === "answer" && a.answers.length) {
      const best = a.answers[0];
      card.appendChild(el("p", "q", best.title));
      card.appendChild(el("p", "text", best.text));
      card.appendChild(el("p", "source", sourceLabel(best)));
      const cited = citesLine(best);
      if (cited) card.appendChild(cited);
      if (a.answers.length > 1) card.appendChild(relatedList("相关问题", a.answers.slice(1)));
    } else if (a.decision === "clarify") {
      card.appendChild(el("p", "text", a.message || "您是不是想问以下问题？"));
      if (a.answers.length) {
        const options = el("div", "options");
        a.answers.forEach((it, i) => {
          // numbered, as the prompt says: typing the number picks the option too (see ask)
          const b = el("button", "option");
          b.type = "button";
          b.append(el("span", "option-n", i + 1 + "."), document.createTextNode(" " + it.title));
          b.addEventListener("click", () => ask(it.title));
          options.appendChild(b);
        });
        card.appendChild(options);
      }
    } else if (a.decision === "handoff") {
      if (a.reason === "empty_query") {
        card.appendChild(el("p", "text", a.message || "请输入您想咨询的问题。"));
      } else {
        card.appendChild(el("span", "badge", "已转人工"));
        if (HANDOFF_REASON[a.reason]) card.appendChild(el("p", "reason", HANDOFF_REASON[a.reason]));
        const message = (a.handoff && a.handoff.message) || a.message;
        if (message) card.appendChild(el("p", "text", message));
        if (a.handoff && a.handoff.ticket_id && a.handoff.ticket_id !== "-") {
          const t = el("p", "ticket", "工单号：");
          t.appendChild(el("code", "ticket-id", a.handoff.ticket_id));
          card.appendChild(t);
        }
        if (a.suggestions.length) card.appendChild(relatedList("等待期间，您可以先看看：", a.suggestions));
      }
    } else {
      card.appendChild(el("p", "text", a.message || "请换个说法描述您的问题。"));
    }

    if (a.answer_id && a.reason !== "greeting" && a.reason !== "empty_query") card.appendChild(feedbackRow(a));
    row.appendChild(card);
    log.appendChild(row);
  }

  function feedbackRow(a) {
    const box = el("div", "feedback");
    box.appendChild(el("span", null, "这个回答有帮助吗？"));
    const buttons = {};
    const thanks = el("span", "thanks");
    thanks.setAttribute("role", "status");
    for (const [vote, label, title] of [
      ["up", "👍", "有帮助"],
      ["down", "👎", "没帮助"],
    ]) {
      const b = el("button", "vote", label);
      b.type = "button";
      b.dataset.vote = vote;
      b.setAttribute("aria-label", title);
      b.title = title;
      b.setAttribute("aria-pressed", String(state.votes[a.answer_id] === vote));
      b.addEventListener("click", async () => {
        if (await sendVote(a, vote, null, thanks)) {
          for (const v in buttons) buttons[v].setAttribute("aria-pressed", String(v === vote));
          if (vote === "down" && !box.querySelector(".comment")) box.appendChild(commentForm(a, thanks));
        }
      });
      buttons[vote] = b;
      box.appendChild(b);
    }
    box.appendChild(thanks);
    return box;
  }

  function commentForm(a, thanks) {
    const f = el("form", "comment");
    const field = el("input");
    field.type = "text";
    field.maxLength = 500;
    field.placeholder = "哪里没帮到您？（选填）";
    field.setAttribute("aria-label", "补充说明（选填）");
    const b = el("button", null, "提交");
    b.type = "submit";
    f.append(field, b);
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = field.value.trim();
      if (text && (await sendVote(a, "down", text, thanks))) f.remove();
    });
    return f;
  }

  // The first card: the KB's greeting, its example questions as buttons that ask them.
  function welcomeRow() {
    const row = el("div", "msg bot welcome");
    const card = el("article", "card greeting");
    card.dataset.decision = "greeting";
    card.dataset.reason = "greeting";
    card.appendChild(el("p", "text", welcome.message + "\n" + HUMAN_HINT));
    if (welcome.examples.length) {
      const options = el("div", "options examples");
      for (const q of welcome.examples) {
        const b = el("button", "option example", q);
        b.type = "button";
        b.addEventListener("click", () => ask(q));
        options.appendChild(b);
      }
      card.appendChild(options);
    }
    row.appendChild(card);
    return row;
  }

  async function loadWelcome() {
    try {
      const path = "v1/welcome" + (shop ? "?shop=" + encodeURIComponent(shop) : "");
      const r = await fetch(new URL(path, document.baseURI), { credentials: "same-origin" });
      const data = r.ok ? await r.json() : null;
      if (!data || typeof data.message !== "string") return;
      welcome = { message: data.message, examples: Array.isArray(data.examples) ? data.examples.map(String) : [] };
      const shown = log.querySelector(".msg.welcome");
      if (shown) shown.replaceWith(welcomeRow());
    } catch (e) {
      /* offline or not ready: the plain greeting stays */
    }
  }

  function render() {
    log.textContent = "";
    log.appendChild(welcomeRow());
    for (const item of state.items) {
      if (item.role === "user") renderUser(item.text);
      else if (item.role === "bot") renderBot(item.answer);
    }
    scrollDown();
  }

  // --- talking to kefu (relative URLs: the page also works behind a path prefix) ----------------------------
  async function post(path, body) {
    const r = await fetch(new URL(path, document.baseURI), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      /* not JSON: reported by status below */
    }
    return { ok: r.ok, status: r.status, data };
  }

  function problem(status, data) {
    if (status === 429) return "发送太频繁了，请稍等片刻再试。";
    if (status === 503) return "客服系统暂时繁忙，请稍后再试。";
    if (status === 404 && shop) return "这家店铺的在线客服暂未开通，请稍后再试。";
    if (status === 413 || status === 422) return "消息太长或格式不对，请精简后再发送（最多 500 字）。";
    return "抱歉，出了点问题" + (data && data.message ? "：" + data.message : "，请稍后再试。");
  }

  // 「2」 right after a clarify means its second option.
  function chosenOption(text) {
    const m = /^\s*([1-9])\s*[.、。)）]?\s*$/.exec(text.replace(/[１-９]/g, (d) => String(d.charCodeAt(0) - 0xff10)));
    const last = state.items[state.items.length - 1];
    if (!m || !last || last.role !== "bot" || last.answer.reason !== "ambiguous") return text;
    const option = last.answer.answers[Number(m[1]) - 1];
    return option ? option.title : text;
  }

  let busy = false;
  async function ask(text) {
    text = chosenOption(String(text || "").trim());
    if (!text || busy) return;
    busy = true;
    sendButton.disabled = true;
    state.items.push({ role: "user", text });
    save();
    renderUser(text);
    const typing = note("客服正在输入…");
    typing.classList.add("typing");
    scrollDown();
    try {
      const body = { query: text };
      if (state.session_id) body.session_id = state.session_id;
      if (shop) body.shop = shop;
      const r = await post("v1/answer", body);
      typing.remove();
      if (!r.ok || !r.data || !r.data.decision) {
        note(problem(r.status, r.data), true);
        return;
      }
      const a = slim(r.data);
      state.session_id = a.session_id;
      state.items.push({ role: "bot", answer: a });
      save();
      renderBot(a);
      scrollDown();
    } catch (e) {
      typing.remove();
      note("网络连接失败，请检查网络后重试。", true);
    } finally {
      busy = false;
      sendButton.disabled = false;
    }
  }

  async function sendVote(a, vote, comment, thanks) {
    const body = { answer_id: a.answer_id, session_id: a.session_id, vote };
    if (comment) body.comment = comment;
    try {
      const r = await post("v1/feedback", body);
      if (r.ok) {
        state.votes[a.answer_id] = vote;
        save();
        thanks.textContent = comment ? "已收到您的补充，谢谢！" : "感谢您的反馈！";
        return true;
      }
      thanks.textContent = r.status === 404 ? "这条回答已无法评价。" : problem(r.status, r.data);
    } catch (e) {
      thanks.textContent = "网络连接失败，反馈未发送。";
    }
    return false;
  }

  // --- controls -------------------------------------------------------------------------------------------
  function setElder(on) {
    root.classList.toggle("elder", on);
    $("elder").setAttribute("aria-pressed", String(on));
    writeStore(ELDER, on ? "1" : "0");
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || busy) return;
    input.value = "";
    ask(text);
  });
  input.addEventListener("keydown", (e) => {
    // Enter sends, Shift+Enter is a new line; never while an input method is composing (拼音 …)
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  $("human").addEventListener("click", () => ask("转人工"));
  $("elder").addEventListener("click", () => setElder(!root.classList.contains("elder")));
  $("reset").addEventListener("click", () => {
    state = { session_id: null, items: [], votes: {} };
    save();
    render();
    input.focus();
  });
  if (embedded) {
    root.classList.add("embed");
    const close = $("close");
    close.hidden = false;
    // The widget on the host page listens for this (it checks that the message comes from our frame).
    close.addEventListener("click", () => window.parent.postMessage({ type: "kefu:close" }, "*"));
  }
  window.addEventListener("storage", (e) => {
    if (e.key === ELDER) setElder(e.newValue === "1"); // another tab switched 长辈模式
  });

  setElder(readStore(ELDER) === "1");
  render();
  if (shop && !SHOP_RE.test(shop)) {
    // a wrong embed code: say so rather than answer from the platform's help center alone
    note("这家店铺的客服地址不正确（shop=" + shop + "），请联系店铺检查嵌入代码。", true);
    input.disabled = sendButton.disabled = $("human").disabled = true;
  } else {
    loadWelcome();
  }
})();
