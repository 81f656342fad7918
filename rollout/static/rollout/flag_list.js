// The flags list's one-click switches: a button fills the reason dialog, which posts the
// switch (a new revision) with the operator's reason.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const dialog = document.getElementById("flag-switch-dialog");
  if (!dialog) return;
  const field = (id) => document.getElementById(id);
  document.querySelectorAll("button.flag-switch").forEach((button) => {
    button.addEventListener("click", (event) => {
      event.preventDefault();
      const data = button.dataset;
      field("flag-switch-flag").value = data.flag;
      field("flag-switch-environment").value = data.environment;
      field("flag-switch-to").value = data.to;
      field("flag-switch-title").textContent =
        (data.to === "off" ? "Kill " : "Turn on ") + data.flagKey + " in " + data.environmentKey;
      field("flag-switch-confirm").textContent = data.to === "off" ? "Kill it" : "Turn it on";
      field("flag-switch-reason").value = "";
      dialog.showModal();
      field("flag-switch-reason").focus();
    });
  });
  field("flag-switch-cancel").addEventListener("click", () => dialog.close());
});
