// The review queue in the browser: a reviewer key (Ed25519, WebCrypto, kept in IndexedDB),
// passkey registration and sign-in, and signed verdicts, all against the /v1/human endpoints.
// Nothing secret leaves the browser: the private key is not extractable, and the page only
// sends WebAuthn responses and DSSE signatures. See docs/web.md ("Review queue").
"use strict";
(function () {
  var B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  var TYPE = "application/vnd.in-toto+json";
  var state = { did: null, keys: null, signedIn: false };

  function $(id) { return document.getElementById(id); }

  function b58(bytes) {
    var digits = [0];
    bytes.forEach(function (byte) {
      var carry = byte;
      for (var i = 0; i < digits.length; i++) {
        carry += digits[i] << 8;
        digits[i] = carry % 58;
        carry = (carry / 58) | 0;
      }
      while (carry > 0) { digits.push(carry % 58); carry = (carry / 58) | 0; }
    });
    var out = "";
    for (var k = 0; k < bytes.length && bytes[k] === 0; k++) { out += "1"; }
    for (var j = digits.length - 1; j >= 0; j--) { out += B58[digits[j]]; }
    return out;
  }

  function toB64(bytes) {
    var s = "";
    new Uint8Array(bytes).forEach(function (b) { s += String.fromCharCode(b); });
    return btoa(s);
  }
  function toB64url(bytes) {
    return toB64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function fromB64(text) {
    var bin = atob(text);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  function fromB64url(text) {
    var s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    return fromB64(s);
  }

  // -- the reviewer key -------------------------------------------------------------------
  function db() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open("edgetrust-review", 1);
      req.onupgradeneeded = function () { req.result.createObjectStore("keys"); };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }
  function idb(mode, fn) {
    return db().then(function (d) {
      return new Promise(function (resolve, reject) {
        var tx = d.transaction("keys", mode);
        var req = fn(tx.objectStore("keys"));
        tx.oncomplete = function () { resolve(req.result); };
        tx.onerror = function () { reject(tx.error); };
      });
    });
  }
  function loadKeys() {
    return idb("readonly", function (s) { return s.get("reviewer"); }).then(function (keys) {
      if (keys) { return keys; }
      return crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])
        .then(function (fresh) {
          return idb("readwrite", function (s) { return s.put(fresh, "reviewer"); })
            .then(function () { return fresh; });
        });
    });
  }
  function didOf(publicKey) {
    return crypto.subtle.exportKey("raw", publicKey).then(function (raw) {
      var bytes = new Uint8Array(34);
      bytes[0] = 0xed; bytes[1] = 0x01;
      bytes.set(new Uint8Array(raw), 2);
      return "did:key:z" + b58(bytes);
    });
  }
  // DSSE: sign PAE(payloadType, payload) with the DID's key; the envelope the node logs.
  function dsse(answer) {
    var payload = fromB64(answer.payload);
    var enc = new TextEncoder();
    var type = enc.encode(answer.payloadType);
    var head = enc.encode("DSSEv1 " + type.length + " " + answer.payloadType + " " +
      payload.length + " ");
    var msg = new Uint8Array(head.length + payload.length);
    msg.set(head, 0); msg.set(payload, head.length);
    return crypto.subtle.sign({ name: "Ed25519" }, state.keys.privateKey, msg).then(function (sig) {
      return { payload: answer.payload, payloadType: answer.payloadType || TYPE,
        signatures: [{ keyid: state.did, sig: toB64(sig) }] };
    });
  }

  // -- talking to the node ----------------------------------------------------------------
  function post(path, body) {
    return fetch(path, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      // The passkey session lives in a cookie; the /v1/human JSON API takes none.
      credentials: path.indexOf("/review/") === 0 ? "same-origin" : "omit" }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (obj) {
        if (!resp.ok) {
          var err = new Error(obj.message || ("the node answered " + resp.status));
          err.status = resp.status;
          throw err;
        }
        return obj;
      });
    });
  }
  function creationOptions(pk) {
    var o = Object.assign({}, pk);
    o.challenge = fromB64url(pk.challenge);
    o.user = Object.assign({}, pk.user, { id: fromB64url(pk.user.id) });
    o.excludeCredentials = (pk.excludeCredentials || []).map(function (c) {
      return { type: c.type, id: fromB64url(c.id) };
    });
    return { publicKey: o };
  }
  function requestOptions(pk) {
    var o = Object.assign({}, pk);
    o.challenge = fromB64url(pk.challenge);
    o.allowCredentials = (pk.allowCredentials || []).map(function (c) {
      return { type: c.type, id: fromB64url(c.id) };
    });
    return { publicKey: o };
  }
  function credentialJSON(cred) {
    var r = cred.response;
    var response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) { response.attestationObject = toB64url(r.attestationObject); }
    if (r.authenticatorData) {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) { response.userHandle = toB64url(r.userHandle); }
    }
    return { id: cred.id, rawId: toB64url(cred.rawId), type: cred.type, response: response };
  }

  // -- the page ---------------------------------------------------------------------------
  // The same words as review.published_text on the server.
  function publishedText(p) {
    if (!p) { return "not published"; }
    var head = "published at entry " + p.index;
    if (!p.stale) { return head + ": current"; }
    var later = p.later.slice(0, 10).join(", ");
    if (p.later.length > 10) { later += " and " + (p.later.length - 10) + " more"; }
    return head + ": stale (later: " + later + ")";
  }
  function say(text) { $("status").textContent = text; }
  function problem(err) {
    var p = $("problem");
    var text = err && err.message ? err.message : String(err);
    if (err && err.name === "NotAllowedError") {
      text = "The passkey ceremony was cancelled or timed out; nothing was sent.";
    }
    p.textContent = text;
    p.hidden = false;
  }
  function clearProblem() { $("problem").hidden = true; $("problem").textContent = ""; }
  function busy(on) {
    ["register", "login", "logout"].forEach(function (id) { if ($(id)) { $(id).disabled = on; } });
  }

  function logout() {
    clearProblem(); busy(true);
    return post("/review/logout", { csrf: csrf() })
      .then(function () { location.reload(); })
      .catch(function (err) { problem(err); busy(false); });
  }

  // The server opened a passkey session for the DID in data-session; answer only when it is
  // this browser's reviewer key (another key's session cannot sign verdicts here).
  function resumeSession() {
    var session = $("reviewer").dataset.session;
    if (!session) { return; }
    if (session !== state.did) {
      problem(new Error("This passkey session is for another DID than this browser's " +
        "reviewer key; sign out and sign in again."));
      return;
    }
    state.signedIn = true;
    document.querySelectorAll("form.answer button").forEach(function (b) { b.disabled = false; });
  }

  function csrf() { return $("csrf").value; }

  function register() {
    clearProblem(); busy(true); say("Registering a passkey…");
    return post("/v1/human/register/options", { did: state.did })
      .then(function (opts) { return navigator.credentials.create(creationOptions(opts.publicKey)); })
      .then(function (cred) {
        return post("/v1/human/register/verify", { did: state.did, credential: credentialJSON(cred) });
      })
      .then(dsse)
      .then(function (env) { return post("/v1/human/reviewers", env); })
      .then(function (done) {
        say("Registered (log entry " + done.index + "); now sign in.");
      })
      .catch(function (err) { say("Not signed in."); problem(err); })
      .finally(function () { busy(false); });
  }

  function login() {
    clearProblem(); busy(true); say("Signing in…");
    return post("/v1/human/login/options", { did: state.did })
      .then(function (opts) { return navigator.credentials.get(requestOptions(opts.publicKey)); })
      .then(function (cred) {
        return post("/review/session",
          { did: state.did, credential: credentialJSON(cred), csrf: csrf() });
      })
      .then(function () { say("Signed in; loading your queue…"); location.reload(); })
      .catch(function (err) { say("Not signed in."); problem(err); })
      .finally(function () { busy(false); });
  }

  function answer(ev) {
    ev.preventDefault();
    var form = ev.target;
    var mine = form.querySelector(".mine");
    if (!state.signedIn) { problem(new Error("Sign in with your passkey first.")); return; }
    clearProblem();
    var body = {
      task: form.dataset.task,
      answer: form.querySelector("input[name=answer]:checked").value,
      confidence: Number(form.querySelector("input[name=confidence]").value),
      reviewer: state.did
    };
    var button = form.querySelector("button");
    button.disabled = true;
    mine.textContent = "Approve the verdict with your passkey…";
    post("/v1/human/review/options", body)
      .then(function (opts) { return navigator.credentials.get(requestOptions(opts.publicKey)); })
      .then(function (cred) {
        return post("/v1/human/review/statement",
          Object.assign({}, body, { assertion: credentialJSON(cred) }));
      })
      .then(dsse)
      .then(function (env) { return post("/v1/human/verdicts", env); })
      .then(function (done) {
        mine.textContent = "Verdict logged at entry " + done.index + ": " + done.answer;
        return fetch("/v1/human/tasks/" + body.task + "/aggregate").then(function (resp) {
          return resp.ok ? resp.json() : null;
        });
      })
      .then(function (agg) {
        if (!agg) { return; }
        var article = $("task-" + body.task);
        article.querySelector(".result").textContent = agg.answer + " (posterior " +
          agg.posterior.toFixed(3) + ", " + agg.reviewers.length + " reviewer(s))";
        article.querySelector(".count").textContent = String(agg.reviewers.length);
        article.querySelector(".published").textContent = publishedText(agg.published);
      })
      .catch(function (err) { mine.textContent = ""; problem(err); })
      .finally(function () { button.disabled = false; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!$("reviewer")) { return; }
    busy(true);
    document.querySelectorAll("form.answer").forEach(function (form) {
      form.addEventListener("submit", answer);
    });
    loadKeys()
      .then(function (keys) { state.keys = keys; return didOf(keys.publicKey); })
      .then(function (did) {
        state.did = did;
        $("did").textContent = did;
        if ($("register")) { $("register").addEventListener("click", register); }
        if ($("login")) { $("login").addEventListener("click", login); }
        if ($("logout")) { $("logout").addEventListener("click", logout); }
        busy(false);
        resumeSession();
      })
      .catch(function (err) {
        problem(new Error("This browser cannot make a reviewer key (Ed25519 WebCrypto, " +
          "IndexedDB): " + (err && err.message ? err.message : err)));
      });
  });
})();
