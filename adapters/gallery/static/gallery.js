// The gallery's only script (the Content-Security-Policy allows no inline one):
// follow images being made, and ask before a delete.
"use strict";

function follow(element) {
  const url = element.dataset.poll;
  const check = async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (response.ok && (await response.json()).final) {
        window.location.reload();
        return;
      }
    } catch (error) {
      // A dropped connection: try again at the next tick.
    }
    window.setTimeout(check, 1500);
  };
  window.setTimeout(check, 1000);
}

document.querySelectorAll("[data-poll]").forEach(follow);

document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
});
