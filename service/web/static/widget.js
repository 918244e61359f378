/*
 * kefu chat widget. On any page:
 *   <script src="https://KEFU_HOST/widget.js" data-kefu-url="https://KEFU_HOST"></script>
 * draws a floating button that opens kefu's chat page in an iframe. Optional: data-kefu-label (the
 * button's text, default 在线客服) and data-kefu-shop (a shop's id: its chat, answered from that
 * shop's knowledge base with the platform's help center beside it). The only global is
 * window.KefuWidget {open, close, toggle, isOpen}.
 * The site's origin must be listed in kefu's KEFU_FRAME_ANCESTORS, or the browser refuses the frame.
 */
(function () {
  "use strict";
  if (window.KefuWidget) return; // the snippet pasted twice

  var script = document.currentScript;
  var given = (script && script.getAttribute("data-kefu-url")) || (script && script.src) || "";
  var base;
  try {
    base = new URL(given, location.href);
  } catch (e) {
    console.error("kefu widget: data-kefu-url is not a URL: " + given);
    return;
  }
  if (!script || !script.getAttribute("data-kefu-url")) base = new URL("./", base); // beside widget.js
  var path = base.pathname.replace(/\/+$/, "");
  var chatUrl = base.origin + path + "/?embed=1";
  var shop = script && script.getAttribute("data-kefu-shop");
  if (shop) {
    if (!/^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/.test(shop)) {
      console.error("kefu widget: data-kefu-shop is not a shop id (lowercase letters, digits, - and _): " + shop);
      return;
    }
    chatUrl += "&shop=" + shop;
  }
  var kefuOrigin = base.origin;
  var label = (script && script.getAttribute("data-kefu-label")) || "在线客服";

  // Styles are set through the CSSOM (element.style), which a host page's CSP allows, and the
  // elements live in a shadow root, so the site's own CSS cannot reach them (open: tests and tools can look in).
  function css(node, props) {
    for (var k in props) node.style.setProperty(k, props[k]);
    return node;
  }

  var host = css(document.createElement("div"), {
    position: "fixed",
    right: "20px",
    bottom: "20px",
    "z-index": "2147483000",
    width: "0",
    height: "0",
  });
  host.setAttribute("data-kefu-widget", "");
  var shadow = host.attachShadow({ mode: "open" });

  var panel = css(document.createElement("div"), {
    position: "fixed",
    display: "none",
    background: "#fff",
    overflow: "hidden",
    "box-shadow": "0 12px 40px rgba(0,0,0,.28)",
  });
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", label);

  var button = css(document.createElement("button"), {
    all: "initial",
    position: "fixed",
    right: "20px",
    bottom: "20px",
    "box-sizing": "border-box",
    height: "56px",
    "min-width": "56px",
    padding: "0 18px",
    "border-radius": "28px",
    background: "#c2410c",
    color: "#fff",
    font: '600 16px/56px system-ui, -apple-system, "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif',
    "text-align": "center",
    cursor: "pointer",
    "box-shadow": "0 6px 20px rgba(0,0,0,.25)",
  });
  button.type = "button";
  button.setAttribute("aria-haspopup", "dialog");
  button.setAttribute("aria-expanded", "false");
  button.textContent = "💬 " + label;

  var frame = null;
  var opened = false;

  function layout() {
    var narrow = window.innerWidth < 480;
    // A phone gets the whole screen (the chat page's × closes it); a desktop a panel above the button.
    css(panel, narrow
      ? { left: "0", top: "0", right: "0", bottom: "0", width: "100%", height: "100%", "border-radius": "0" }
      : {
          left: "auto",
          top: "auto",
          right: "20px",
          bottom: "88px",
          width: "min(380px, calc(100vw - 40px))",
          height: "min(640px, calc(100vh - 110px))",
          "border-radius": "14px",
        });
    css(button, { display: narrow && opened ? "none" : "block" });
  }

  function open() {
    if (!frame) {
      frame = css(document.createElement("iframe"), { border: "0", width: "100%", height: "100%", display: "block" });
      frame.title = label;
      frame.src = chatUrl; // loaded on first open only: a page view costs kefu nothing
      panel.appendChild(frame);
    }
    opened = true;
    css(panel, { display: "block" });
    button.textContent = "✕ 关闭";
    button.setAttribute("aria-expanded", "true");
    layout();
    frame.focus();
  }

  function close() {
    opened = false;
    css(panel, { display: "none" });
    button.textContent = "💬 " + label;
    button.setAttribute("aria-expanded", "false");
    layout();
  }

  function toggle() {
    if (opened) close();
    else open();
  }

  button.addEventListener("click", toggle);
  window.addEventListener("resize", layout);
  window.addEventListener("message", function (e) {
    // only our own frame may close the panel
    if (frame && e.source === frame.contentWindow && e.origin === kefuOrigin && e.data && e.data.type === "kefu:close") {
      close();
    }
  });

  shadow.appendChild(panel);
  shadow.appendChild(button);
  layout();
  function mount() {
    document.body.appendChild(host);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  window.KefuWidget = Object.freeze({
    open: open,
    close: close,
    toggle: toggle,
    isOpen: function () {
      return opened;
    },
  });
})();
