// Drag-and-drop for the receipt form: a dropped file fills the same <input type=file> and the
// form is submitted as if chosen by hand (same CSRF token, same server path). Without
// JavaScript the plain file input works alone.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("upload");
  var input = document.getElementById("bundle");
  if (!form || !input) { return; }
  ["dragenter", "dragover"].forEach(function (name) {
    form.addEventListener(name, function (ev) { ev.preventDefault(); form.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    form.addEventListener(name, function () { form.classList.remove("over"); });
  });
  form.addEventListener("drop", function (ev) {
    ev.preventDefault();
    var files = ev.dataTransfer && ev.dataTransfer.files;
    if (!files || files.length !== 1) { return; }
    input.files = files;
    form.requestSubmit();
  });
});
