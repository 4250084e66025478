// noVNC on the websocket the CLI serves beside this page (cli/webconsole.py). #status
// holds "connecting", "connected" or "disconnected: REASON" (data-state: the first word),
// which a person reads and the tests poll.
import RFB from "./novnc/core/rfb.js";

const status = document.getElementById("status");
const button = document.getElementById("ctrl-alt-del");

function show(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

const url = new URL("websockify", window.location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
const rfb = new RFB(document.getElementById("screen"), url.href, { wsProtocols: ["binary"] });
rfb.scaleViewport = false;
rfb.resizeSession = false;

rfb.addEventListener("connect", () => {
  show("connected", "connected");
  button.disabled = false;
});
rfb.addEventListener("disconnect", (event) => {
  show("disconnected", event.detail.clean ? "disconnected" : "disconnected: connection lost");
  button.disabled = true;
});
rfb.addEventListener("securityfailure", (event) => {
  show("disconnected", `disconnected: ${event.detail.reason || "security failure"}`);
});
rfb.addEventListener("desktopname", (event) => {
  document.getElementById("name").textContent = event.detail.name;
  document.title = `${event.detail.name} - kubevisor console`;
});
button.addEventListener("click", () => rfb.sendCtrlAltDel());
window.rfb = rfb;
