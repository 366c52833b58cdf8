// The gallery's only script (the Content-Security-Policy allows no inline one):
// follow images being made, ask before a delete, copy /imagine commands, tick several
// images to download or delete, compare an image with the one it was made from, and select
// the parts of an image for Vary (Region).
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

// Several images at once: the grid's boxes belong to one form, whose buttons wait for a box ticked.
document.querySelectorAll("form.picked").forEach((form) => {
  // getAttribute: the boxes are named "id", and a form's named controls hide its own properties (form.id).
  const boxes = document.querySelectorAll(`input[form="${form.getAttribute("id")}"]`);
  const count = form.querySelector(".count");
  const buttons = form.querySelectorAll("[data-needs-pick]");
  const changed = () => {
    const ticked = [...boxes].filter((box) => box.checked).length;
    buttons.forEach((button) => {
      button.disabled = ticked === 0;
    });
    count.textContent = ticked === 0
      ? "Tick images to download or delete several at once."
      : `${ticked} image${ticked === 1 ? "" : "s"} selected.`;
  };
  boxes.forEach((box) => box.addEventListener("change", changed));
  changed();
});

document.querySelectorAll("button[data-confirm]").forEach((button) => {
  button.addEventListener("click", (event) => {
    if (!window.confirm(button.dataset.confirm)) {
      event.preventDefault();
    }
  });
});

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

// Before and after: the image it was made from over this one, shown from the left as far as the slider says.
document.querySelectorAll("details.compare").forEach((compare) => {
  const before = compare.querySelector("img.before");
  const slider = compare.querySelector("input[type=range]");
  const show = () => {
    before.style.clipPath = `inset(0 ${100 - Number(slider.value)}% 0 0)`;
  };
  slider.addEventListener("input", show);
  show();
});

// Vary (Region): boxes and lassos drawn over the image, kept in the image's own pixels and sent
// as "x,y x,y …;x,y …" (bot/regions.py reads it). The canvas has the image's size and is shown
// at the image's, so a pointer's place scales by the same factor both ways.
function regionEditor(editor) {
  const form = editor.closest("form");
  const canvas = editor.querySelector("canvas");
  const field = form.querySelector("input[name=regions]");
  const submit = form.querySelector("button[type=submit]");
  const undo = form.querySelector("[data-undo]");
  const clear = form.querySelector("[data-clear]");
  const said = form.querySelector(".selected");
  const tools = form.querySelectorAll("[data-tool]");
  const width = canvas.width;
  const height = canvas.height;
  const most = Number(editor.dataset.most);
  // A lasso keeps a corner each 1/128 of the image's longer side the pointer moves: enough for an
  // outline, and the corners stay within what the server takes.
  const spacing = Math.max(2, Math.max(width, height) / 128);
  const context = canvas.getContext("2d");
  // The whole image in view at once, however tall: no part of it needs scrolling to reach while drawing.
  const fit = () => {
    editor.style.maxWidth = `${Math.floor((window.innerHeight * 0.75 * width) / height)}px`;
  };
  fit();
  window.addEventListener("resize", fit);
  const parts = [];
  let tool = "box";
  let start = null;
  let drawing = null;

  function at(event) {
    const box = canvas.getBoundingClientRect();
    const x = Math.round(((event.clientX - box.left) * width) / box.width);
    const y = Math.round(((event.clientY - box.top) * height) / box.height);
    return [Math.min(width, Math.max(0, x)), Math.min(height, Math.max(0, y))];
  }

  function boxOf(a, b) {
    return [a, [b[0], a[1]], b, [a[0], b[1]]];
  }

  function draw() {
    context.clearRect(0, 0, width, height);
    // Two pixels on screen, whatever the image's own size.
    context.lineWidth = (2 * width) / (canvas.getBoundingClientRect().width || width);
    context.fillStyle = "rgba(255, 255, 255, 0.45)";
    context.strokeStyle = "rgba(52, 81, 178, 0.95)";
    for (const part of drawing ? [...parts, drawing] : parts) {
      context.beginPath();
      part.forEach(([x, y], index) => (index ? context.lineTo(x, y) : context.moveTo(x, y)));
      context.closePath();
      context.fill();
      context.stroke();
    }
  }

  function changed() {
    field.value = parts.map((part) => part.map((corner) => corner.join(",")).join(" ")).join(";");
    submit.disabled = undo.disabled = clear.disabled = parts.length === 0;
    const full = parts.length >= most;
    said.textContent = parts.length === 0
      ? "Nothing selected yet."
      : `${parts.length} part${parts.length === 1 ? "" : "s"} selected${full ? " (the most)" : ""}.`;
    draw();
  }

  function big(part) {
    // A click, or a line, selects nothing: a part needs some width and height.
    const xs = part.map(([x]) => x);
    const ys = part.map(([, y]) => y);
    const side = Math.max(width, height) / 100;
    return part.length >= 3 && Math.max(...xs) - Math.min(...xs) >= side && Math.max(...ys) - Math.min(...ys) >= side;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (parts.length >= most || event.button !== 0) {
      return;
    }
    canvas.setPointerCapture(event.pointerId);
    start = at(event);
    drawing = tool === "box" ? boxOf(start, start) : [start];
    event.preventDefault();
    draw();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) {
      return;
    }
    const here = at(event);
    if (tool === "box") {
      drawing = boxOf(start, here);
    } else {
      const last = drawing[drawing.length - 1];
      if (Math.hypot(here[0] - last[0], here[1] - last[1]) >= spacing) {
        drawing.push(here);
      }
    }
    draw();
  });
  const finish = () => {
    if (drawing && big(drawing)) {
      parts.push(drawing);
    }
    drawing = null;
    changed();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  tools.forEach((button) => {
    button.addEventListener("click", () => {
      tool = button.dataset.tool;
      tools.forEach((other) => other.setAttribute("aria-pressed", String(other === button)));
    });
  });
  // The same box from four numbers, for a keyboard or a screen reader: percent of the image's sides.
  const edge = (name, side) => {
    const value = Number(form.querySelector(`input[name="box-${name}"]`).value);
    return Math.round((Math.min(100, Math.max(0, value)) * side) / 100);
  };
  const addBox = () => {
    const part = boxOf([edge("left", width), edge("top", height)], [edge("right", width), edge("bottom", height)]);
    if (parts.length < most && big(part)) {
      parts.push(part);
    }
    changed();
  };
  form.querySelector("[data-add-box]").addEventListener("click", addBox);
  form.querySelectorAll('input[name^="box-"]').forEach((input) => {
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault(); // adds the box; Enter here never sends the form
        addBox();
      }
    });
  });
  undo.addEventListener("click", () => {
    parts.pop();
    changed();
  });
  clear.addEventListener("click", () => {
    parts.length = 0;
    changed();
  });
  changed();
}

document.querySelectorAll("[data-region-editor]").forEach(regionEditor);
