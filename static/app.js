// @ts-check
// UI module: DOM only. Everything about the server and WebRTC lives in
// protocol.js (VideoChatClient).
import { VideoChatClient } from './protocol.js';

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @returns {T}
 */
function $(id) {
    const el = document.getElementById(id);
    if (!el) throw new Error(`missing #${id}`);
    return /** @type {T} */ (el);
}

const signinView = $('signin-view');
const callView = $('call-view');
const loginForm = /** @type {HTMLFormElement} */ ($('login-form'));
const nameInput = /** @type {HTMLInputElement} */ ($('name-input'));
const loginBtn = /** @type {HTMLButtonElement} */ ($('login-btn'));
const loginError = $('login-error');
const me = $('me');
const usersList = $('users');
const callForm = /** @type {HTMLFormElement} */ ($('call-form'));
const calleeInput = /** @type {HTMLInputElement} */ ($('callee-input'));
const callBtn = /** @type {HTMLButtonElement} */ ($('call-btn'));
const incoming = $('incoming');
const incomingName = $('incoming-name');
const acceptBtn = /** @type {HTMLButtonElement} */ ($('accept-btn'));
const declineBtn = /** @type {HTMLButtonElement} */ ($('decline-btn'));
const hangupBtn = /** @type {HTMLButtonElement} */ ($('hangup-btn'));
const signoutBtn = /** @type {HTMLButtonElement} */ ($('signout-btn'));
const muteBtn = /** @type {HTMLButtonElement} */ ($('mute-btn'));
const cameraBtn = /** @type {HTMLButtonElement} */ ($('camera-btn'));
const statusLine = $('status');
const errorBanner = $('error');
const errorText = $('error-text');
const errorClose = $('error-close');
const remoteVideo = /** @type {HTMLVideoElement} */ ($('remote-video'));
const localVideo = /** @type {HTMLVideoElement} */ ($('local-video'));

const params = new URLSearchParams(location.search);
const relay = ['1', 'true', 'yes'].includes(params.get('relay') || '');
// A sign-in token handed over by an embedding site (servers with -auth-secret).
const authToken = params.get('token') || '';
// The connection test needs the token too (TURN credentials).
const diagLink = /** @type {HTMLAnchorElement|null} */ (document.getElementById('diag-link'));
if (diagLink && authToken) diagLink.search = '?token=' + encodeURIComponent(authToken);
const client = new VideoChatClient({
    url: `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`,
    iceTransportPolicy: relay ? 'relay' : 'all',
});

/** @type {MediaStream|null} */
let localStream = null;
let micOn = true;
let cameraOn = true;
let loggedIn = false;
/** The status line outside a call ('Ready…', 'Call ended: …'). */
let idleStatus = '';
let starting = false; // getUserMedia in flight for Call/Accept
let frameWatch = 0; // invalidates first-frame watchers of earlier calls
/** @type {string[]} */
let users = [];
let usersTotal = 0; // everyone online; the server lists only the first ~100

/** @type {{callClicked?: number, firstRemoteFrame?: number}} */
const marks = {};

// Test and debugging hooks.
const app = {
    get state() { return client.state; },
    get peer() { return client.peer; },
    get pc() { return client.pc; },
    get lastEndReason() { return client.lastEndReason; },
    /** 'open' | 'reconnecting' | 'closed': the signaling WebSocket */
    get connection() { return client.connection; },
    /** 'new' | 'connected' | 'reconnecting': our media connection */
    get mediaState() { return client.mediaState; },
    /** 'connected' | 'reconnecting': the other participant's, from callstate */
    get peerState() { return client.peerState; },
    get resumes() { return client.resumes; },
    get reconnectAttempts() { return client.reconnectAttempts; },
    get iceRestarts() { return client.iceRestarts; },
    /** recent connection events, {t: performance.now(), what} */
    get events() { return client.events; },
    get status() { return statusLine.textContent; },
    client,
    marks,
};
/** @type {any} */ (window).app = app;

// ---- rendering ----

/**
 * Sets the status shown outside a call (a call's status follows its state).
 * @param {string} text
 */
function setStatus(text) {
    idleStatus = text;
    render();
}

/** @returns {string} what the status line says now */
function statusText() {
    const state = client.state;
    if (state === 'signin') return '';
    if (client.connection === 'reconnecting' || client.mediaState === 'reconnecting') {
        return 'Reconnecting…';
    }
    if (state === 'calling') return `Calling ${client.peer}…`;
    if (state === 'incoming') return `${client.peer} is calling`;
    if (state === 'connected') {
        if (client.peerState === 'reconnecting') return `${client.peer} is reconnecting…`;
        return `Connected with ${client.peer}`;
    }
    return idleStatus;
}

/** @param {string} message */
function showError(message) {
    errorText.textContent = message;
    errorBanner.hidden = false;
}

function clearError() {
    errorBanner.hidden = true;
    errorText.textContent = '';
}

function render() {
    const state = client.state;
    document.body.dataset.state = state;
    signinView.hidden = state !== 'signin';
    callView.hidden = state === 'signin';
    incoming.hidden = state !== 'incoming';
    incomingName.textContent = state === 'incoming' ? client.peer : '';
    const idle = state === 'idle' && !starting;
    callBtn.disabled = !idle;
    calleeInput.disabled = !idle;
    for (const b of usersList.querySelectorAll('button')) b.disabled = !idle;
    hangupBtn.disabled = state !== 'calling' && state !== 'connected';
    acceptBtn.disabled = starting;
    const reconnecting = client.connection === 'reconnecting' || client.mediaState === 'reconnecting'
        || (state === 'connected' && client.peerState === 'reconnecting');
    document.body.dataset.connection = reconnecting ? 'reconnecting' : client.connection;
    statusLine.classList.toggle('reconnecting', reconnecting);
    const text = statusText();
    if (statusLine.textContent !== text) statusLine.textContent = text;
    me.textContent = client.name ? `Signed in as ${client.name}` : '';
}

function renderUsers() {
    usersList.replaceChildren();
    const others = users.filter((u) => u !== client.name);
    for (const name of others) {
        const li = document.createElement('li');
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'user';
        b.dataset.name = name;
        b.textContent = name;
        b.title = `Call ${name}`;
        li.append(b);
        usersList.append(li);
    }
    const more = usersTotal - users.length;
    if (others.length === 0 && more <= 0) {
        const li = document.createElement('li');
        li.className = 'empty';
        li.textContent = 'No one else is online';
        usersList.append(li);
    }
    if (more > 0) {
        const li = document.createElement('li');
        li.className = 'empty';
        li.textContent = `and ${more} more online: type a name to call`;
        usersList.append(li);
    }
    render();
}

function renderToggles() {
    muteBtn.textContent = micOn ? 'Mute' : 'Unmute';
    muteBtn.setAttribute('aria-pressed', String(!micOn));
    muteBtn.classList.toggle('off', !micOn);
    cameraBtn.textContent = cameraOn ? 'Camera off' : 'Camera on';
    cameraBtn.setAttribute('aria-pressed', String(!cameraOn));
    cameraBtn.classList.toggle('off', !cameraOn);
}

// ---- media ----

/** @returns {Promise<MediaStream|null>} */
async function getMedia() {
    try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        for (const t of stream.getAudioTracks()) t.enabled = micOn;
        for (const t of stream.getVideoTracks()) t.enabled = cameraOn;
        return stream;
    } catch (e) {
        const err = /** @type {Error} */ (e);
        showError(`Cannot use camera or microphone: ${err.message || err.name}`);
        return null;
    }
}

/** @type {Promise<MediaStream|null>|null} */
let mediaPromise = null;

/**
 * Starts the camera preview once, right after sign-in, so that pressing
 * Call or Accept does not wait for the camera; calls reuse the stream.
 * @returns {Promise<MediaStream|null>}
 */
function ensureMedia() {
    if (!mediaPromise) {
        mediaPromise = getMedia().then((stream) => {
            if (stream) setLocal(stream);
            else mediaPromise = null; // let the next attempt ask again
            return stream;
        });
    }
    return mediaPromise;
}

/** @param {MediaStream} stream */
function setLocal(stream) {
    stopLocal();
    localStream = stream;
    localVideo.srcObject = stream;
    localVideo.classList.add('live');
    localVideo.play().catch(() => {});
}

function stopLocal() {
    mediaPromise = null;
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    localStream = null;
    localVideo.srcObject = null;
    localVideo.classList.remove('live');
}

function resetMarks() {
    delete marks.callClicked;
    delete marks.firstRemoteFrame;
}

/**
 * Records marks.firstRemoteFrame when the remote video shows its first frame:
 * requestVideoFrameCallback where available, and the media events (first
 * frame decoded: videoWidth > 0) too, since a hidden tab renders no frames.
 */
function watchFirstFrame() {
    const token = ++frameWatch;
    if ('requestVideoFrameCallback' in remoteVideo) {
        remoteVideo.requestVideoFrameCallback(() => firstFrame(token));
    }
}

/** @param {number} token */
function firstFrame(token) {
    if (token !== frameWatch || marks.firstRemoteFrame !== undefined) return;
    if (!remoteVideo.srcObject) return;
    marks.firstRemoteFrame = performance.now();
}

for (const ev of ['loadeddata', 'playing', 'resize']) {
    remoteVideo.addEventListener(ev, () => {
        if (remoteVideo.videoWidth > 0) firstFrame(frameWatch);
    });
}

function playRemote() {
    remoteVideo.play().catch(() => {
        // Autoplay with sound was refused: play muted, unmute on a click.
        remoteVideo.muted = true;
        remoteVideo.play().catch(() => {});
        showError('Sound is off: click the video to turn it on');
        remoteVideo.addEventListener('click', () => {
            remoteVideo.muted = false;
            clearError();
        }, { once: true });
    });
}

// ---- actions ----

/** @param {string} name */
/** Marks the start of a call and gets the camera (null if refused). */
async function startMedia() {
    clearError();
    resetMarks();
    marks.callClicked = performance.now();
    starting = true;
    render();
    const stream = await ensureMedia();
    starting = false;
    return stream;
}

async function startCall(name) {
    name = name.trim();
    if (!name) {
        showError('Enter the name of the person to call');
        return;
    }
    if (client.state !== 'idle' || starting) return;
    const stream = await startMedia();
    if (!stream || client.state !== 'idle') return render(); // e.g. someone called us meanwhile
    // Failures during negotiation arrive through onError.
    await client.call(name, stream).catch((e) => showError(e.message));
}

async function acceptCall() {
    if (client.state !== 'incoming' || starting) return;
    const stream = await startMedia();
    if (!stream) {
        client.decline();
        return render();
    }
    if (client.state !== 'incoming') return render(); // the caller gave up meanwhile
    await client.accept(stream).catch((e) => showError(e.message));
}

// The token is for one name (its "sub"): offer it in the name field.
if (authToken && !nameInput.value) nameInput.value = tokenSubject(authToken);

/**
 * @param {string} token
 * @returns {string} the JWT's sub, or ''
 */
function tokenSubject(token) {
    try {
        const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
        const json = new TextDecoder().decode(Uint8Array.from(atob(payload), (c) => c.charCodeAt(0)));
        const sub = JSON.parse(json).sub;
        return typeof sub === 'string' ? sub : '';
    } catch {
        return '';
    }
}

loginForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = nameInput.value.trim();
    if (!name) {
        loginError.textContent = 'Enter a name';
        return;
    }
    loginError.textContent = '';
    clearError();
    loginBtn.disabled = true;
    try {
        const r = await client.login(name, authToken);
        if (r.success) {
            loggedIn = true;
            ensureMedia();
        }
        else loginError.textContent = r.message || 'Sign-in failed';
    } catch (err) {
        loginError.textContent = /** @type {Error} */ (err).message || 'Cannot connect to server';
    } finally {
        loginBtn.disabled = false;
    }
});

callForm.addEventListener('submit', (e) => {
    e.preventDefault();
    startCall(calleeInput.value);
});

usersList.addEventListener('click', (e) => {
    const target = /** @type {HTMLElement} */ (e.target);
    const b = target.closest('button[data-name]');
    if (b instanceof HTMLButtonElement && b.dataset.name) startCall(b.dataset.name);
});

acceptBtn.addEventListener('click', () => { acceptCall(); });
declineBtn.addEventListener('click', () => client.decline());
signoutBtn.addEventListener('click', () => client.close());
hangupBtn.addEventListener('click', () => client.hangUp());
errorClose.addEventListener('click', clearError);

muteBtn.addEventListener('click', () => {
    micOn = !micOn;
    if (localStream) for (const t of localStream.getAudioTracks()) t.enabled = micOn;
    renderToggles();
});

cameraBtn.addEventListener('click', () => {
    cameraOn = !cameraOn;
    if (localStream) for (const t of localStream.getVideoTracks()) t.enabled = cameraOn;
    renderToggles();
});

// ---- protocol events ----

client.onStateChange = () => render();

client.onConnectionChange = () => render();

// A network change (Wi-Fi to cellular, back online): restart ICE at once
// rather than waiting for the media connection to time out.
window.addEventListener('online', () => client.networkChanged());
// navigator.connection also fires 'change' whenever its rtt/downlink
// estimates move; only a new network type (wifi -> cellular) counts.
const netInfo = /** @type {any} */ (navigator).connection;
if (netInfo && typeof netInfo.addEventListener === 'function') {
    let netType = netInfo.type;
    netInfo.addEventListener('change', () => {
        if (netInfo.type === netType) return;
        netType = netInfo.type;
        client.networkChanged();
    });
}
// Closing the tab ends the session at once (a close frame), not after the
// server's grace period.
window.addEventListener('pagehide', () => client.close());

client.onLogin = (/** @type {boolean} */ success) => {
    if (!success) return;
    setStatus('Ready: pick someone to call');
    render();
};

client.onUsers = (/** @type {string[]} */ list, /** @type {number} */ total) => {
    users = list;
    usersTotal = total;
    renderUsers();
};

client.onIncomingCall = () => render();

client.onAccepted = () => render();

client.onRecording = (/** @type {boolean} */ on) => {
    /** @type {HTMLElement} */ (document.getElementById('recording')).hidden = !on;
};

/** @param {MediaStreamTrack} _track @param {MediaStream} stream */
client.onRemoteTrack = (_track, stream) => {
    if (remoteVideo.srcObject !== stream) {
        remoteVideo.muted = false;
        remoteVideo.srcObject = stream;
        watchFirstFrame();
    }
    playRemote();
};

client.onCallEnded = (/** @type {string} */ reason) => {
    remoteVideo.srcObject = null;
    frameWatch++;
    setStatus(`Call ended: ${reason}`);
    render();
};

client.onError = (/** @type {string} */ message) => showError(message);

client.onClose = (/** @type {string} */ message) => {
    stopLocal();
    remoteVideo.srcObject = null;
    users = [];
    usersTotal = 0;
    renderUsers();
    setStatus('');
    if (loggedIn) {
        loggedIn = false;
        // '' after signing out: nothing went wrong.
        loginError.textContent = message;
        if (message) showError(message);
    }
    render();
};

renderToggles();
renderUsers();
render();
