// A creation's page, for its owner: make it public (its link is shown) or private again.

const page = /** @type {HTMLElement} */ (document.getElementById("creation"));
const toggle = /** @type {HTMLInputElement} */ (document.getElementById("share-toggle"));
const area = /** @type {HTMLElement} */ (document.getElementById("share-area"));
const link = /** @type {HTMLInputElement} */ (document.getElementById("share-link"));
const csrf = /** @type {HTMLInputElement} */ (document.querySelector("[name=csrfmiddlewaretoken]")).value;

toggle.addEventListener("change", async () => {
  const response = await fetch(`/gallery/${page.dataset.id}/share`, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf },
    body: new URLSearchParams({ public: toggle.checked ? "on" : "off" }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    toggle.checked = !toggle.checked;
    return;
  }
  area.hidden = !body.public;
  if (body.link) link.value = body.link;
});
