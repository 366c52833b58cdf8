// The gallery's only script (the Content-Security-Policy allows no inline one):
// follow images being made, ask before a delete, and copy /imagine commands.
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

// The Clipboard API needs a secure context (https, or localhost); a gallery served over plain
// http elsewhere copies through a selected, off-screen text area instead.
function copyBySelection(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch (error) {
    copied = false;
  }
  area.remove();
  return copied;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) {
      // Refused (no permission, page not focused): try the other way.
    }
  }
  return copyBySelection(text);
}

document.querySelectorAll("button[data-copy]").forEach((button) => {
  const label = button.textContent;
  button.addEventListener("click", async () => {
    const copied = await copyText(button.dataset.copy);
    button.textContent = copied ? "Copied" : "Copy failed: select the command";
    button.classList.toggle("copied", copied);
    window.setTimeout(() => {
      button.textContent = label;
      button.classList.remove("copied");
    }, 2000);
  });
});
