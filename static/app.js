// @ts-check
// UI module: DOM only. The server and WebRTC live in protocol.js
// (VideoChatClient, with session.js and peer.js); camera and microphone in
// media.js; getStats numbers in stats.js; the ringtone and notifications in
// ringer.js; the device picker in devices.js.
import { VideoChatClient } from './protocol.js';
import { openMedia, openTrack, stopStream } from './media.js';
import { StatsSampler } from './stats.js';
import { Ringer, canAskNotifications } from './ringer.js';
import { DevicePicker } from './devices.js';

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
const missedList = $('missed');
const missedHeading = $('missed-heading');
const onlineHeading = $('online-heading');
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
const fitBtn = /** @type {HTMLButtonElement} */ ($('fit-btn'));
const fullscreenBtn = /** @type {HTMLButtonElement} */ ($('fullscreen-btn'));
const pipBtn = /** @type {HTMLButtonElement} */ ($('pip-btn'));
const devicesBtn = /** @type {HTMLButtonElement} */ ($('devices-btn'));
const settingsBtn = /** @type {HTMLButtonElement} */ ($('settings-btn'));
const notifyBtn = /** @type {HTMLButtonElement} */ ($('notify-btn'));
const statusLine = $('status');
const callTimer = $('call-timer');
const remoteMuted = $('remote-muted');
const remotePlaceholder = $('remote-placeholder');
const remotePlaceholderText = $('remote-placeholder-text');
const qualityBtn = /** @type {HTMLButtonElement} */ ($('quality-btn'));
const qualityPanel = $('quality-panel');
const soundOff = $('sound-off');
const soundOnBtn = /** @type {HTMLButtonElement} */ ($('sound-on-btn'));
const errorBanner = $('error');
const errorText = $('error-text');
const errorClose = $('error-close');
const stage = $('stage');
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
const ringer = new Ringer();

/** @type {MediaStream|null} the call's camera and microphone; null outside a call */
let localStream = null;
/** @type {'full'|'audio'|'video'|'none'} what the current call sends */
let mediaMode = 'none';
let micOn = true;
let cameraOn = true;
let loggedIn = false;
/** The status line outside a call ('Ready…', 'bob declined the call'). */
let idleStatus = '';
let starting = false; // getUserMedia in flight for Call/Accept
let frameWatch = 0; // invalidates first-frame watchers of earlier calls
/** @type {string[]} */
let users = [];
let usersTotal = 0; // everyone online; the server lists only the first ~100
/** @type {{name: string, at: string}[]} */
const missed = [];
let callStart = 0; // performance.now() when the call connected
/** @type {number|undefined} */
let tickTimer = undefined;
/** @type {StatsSampler|null} */
let sampler = null;
/** @type {import('./stats.js').Quality|null} */
let quality = null;
let prevState = client.state;

/** Device choices, kept across calls and visits. */
const prefs = loadPrefs();

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
    /** what the current call sends: 'full', 'audio', 'video' or 'none' */
    get mediaMode() { return mediaMode; },
    get localStream() { return localStream; },
    /** the last getStats sample of the current call */
    get quality() { return quality; },
    /** the ringtone's AudioContext state ('running' while it can sound) */
    get ringerAudio() { return ringer.audioState; },
    get ringing() { return ringer.ringing; },
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

/**
 * Shows a message in the banner (one at a time: a new one replaces it).
 * @param {string} message
 * @param {'error'|'info'} [kind]
 */
function showError(message, kind = 'error') {
    errorText.textContent = message;
    errorBanner.dataset.kind = kind;
    errorBanner.hidden = false;
}

function clearError() {
    errorBanner.hidden = true;
    errorText.textContent = '';
}

function inCall() {
    return client.state === 'calling' || client.state === 'connected';
}

function render() {
    const state = client.state;
    const was = prevState;
    prevState = state;
    document.body.dataset.state = state;
    signinView.hidden = state !== 'signin';
    callView.hidden = state === 'signin';
    incoming.hidden = state !== 'incoming';
    incomingName.textContent = state === 'incoming' ? client.peer : '';
    const idle = state === 'idle' && !starting;
    callBtn.disabled = !idle;
    calleeInput.disabled = !idle;
    for (const b of usersList.querySelectorAll('button')) b.disabled = !idle;
    for (const b of missedList.querySelectorAll('button')) b.disabled = !idle;
    hangupBtn.disabled = !inCall();
    acceptBtn.disabled = starting;
    const call = inCall();
    for (const b of [muteBtn, cameraBtn, fitBtn, fullscreenBtn, hangupBtn]) b.hidden = !call;
    pipBtn.hidden = !call || !document.pictureInPictureEnabled;
    const reconnecting = client.connection === 'reconnecting' || client.mediaState === 'reconnecting'
        || (state === 'connected' && client.peerState === 'reconnecting');
    document.body.dataset.connection = reconnecting ? 'reconnecting' : client.connection;
    statusLine.classList.toggle('reconnecting', reconnecting);
    const text = statusText();
    if (statusLine.textContent !== text) statusLine.textContent = text;
    me.textContent = client.name ? `Signed in as ${client.name}` : '';
    notifyBtn.hidden = state === 'signin' || !canAskNotifications();
    renderPeer();
    if (state !== was) stateChanged(was, state);
}

/** Focus, ringing, the timer and the stats loop follow the call's state. */
function stateChanged(/** @type {string} */ was, /** @type {string} */ state) {
    if (state === 'incoming') {
        picker.close(); // a modal dialog would cover Accept
        ringer.start(client.peer);
        acceptBtn.focus();
    } else {
        ringer.stop();
    }
    if (state === 'connected') {
        callStart = performance.now();
        startTicking();
        if (lostFocus() || document.activeElement === acceptBtn) hangupBtn.focus();
    }
    if (state === 'idle' && was !== 'signin') {
        stopTicking();
        if (lostFocus()) onlineHeading.focus();
    }
    if (state === 'idle' && was === 'signin') onlineHeading.focus();
}

function lostFocus() {
    const a = document.activeElement;
    return !a || a === document.body || /** @type {HTMLElement} */ (a).offsetParent === null;
}

/** The other side's name, mute and camera state. */
function renderPeer() {
    const connected = client.state === 'connected';
    const pm = client.peerMute;
    remoteMuted.hidden = !connected || !pm.muted;
    remoteMuted.textContent = connected && pm.muted ? `${client.peer} is muted` : '';
    const noVideo = connected && (pm.cameraOff || !hasRemoteVideo());
    remotePlaceholder.hidden = !noVideo;
    remotePlaceholderText.textContent = noVideo
        ? (pm.cameraOff ? `${client.peer}'s camera is off` : `Waiting for ${client.peer}'s video…`) : '';
    callTimer.hidden = !connected;
    qualityBtn.hidden = !connected;
    if (!connected) qualityPanel.hidden = true;
    qualityBtn.setAttribute('aria-expanded', String(!qualityPanel.hidden));
}

function hasRemoteVideo() {
    const s = remoteVideo.srcObject;
    return s instanceof MediaStream && s.getVideoTracks().length > 0 && remoteVideo.videoWidth > 0;
}

function renderUsers() {
    usersList.replaceChildren();
    const others = users.filter((u) => u !== client.name);
    for (const name of others) {
        const li = document.createElement('li');
        li.append(callButton(name, name, 'user'));
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

/**
 * @param {string} name whom it calls
 * @param {string} label
 * @param {string} cls
 */
function callButton(name, label, cls) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = cls;
    b.dataset.name = name;
    b.textContent = label;
    b.setAttribute('aria-label', `Call ${name}`);
    return b;
}

function renderMissed() {
    missedList.replaceChildren();
    for (const m of missed.slice(-5).reverse()) {
        const li = document.createElement('li');
        const span = document.createElement('span');
        span.textContent = `Missed call from ${m.name}, ${m.at}`;
        li.append(span, callButton(m.name, 'Call back', 'callback'));
        missedList.append(li);
    }
    missedHeading.hidden = missed.length === 0;
    render();
}

function renderToggles() {
    const hasAudio = !!localStream && localStream.getAudioTracks().length > 0;
    const hasVideo = !!localStream && localStream.getVideoTracks().length > 0;
    const inCallNoDevice = (/** @type {boolean} */ has) => inCall() && !starting && !has;
    muteBtn.setAttribute('aria-pressed', String(!micOn || inCallNoDevice(hasAudio)));
    muteBtn.disabled = inCallNoDevice(hasAudio);
    cameraBtn.setAttribute('aria-pressed', String(!cameraOn || inCallNoDevice(hasVideo)));
    cameraBtn.disabled = inCallNoDevice(hasVideo);
    fitBtn.setAttribute('aria-pressed', String(document.body.dataset.fit === 'cover'));
}

/** Tells the other side what we send (the additive mute message). */
function tellMute() {
    const hasAudio = !!localStream && localStream.getAudioTracks().length > 0;
    const hasVideo = !!localStream && localStream.getVideoTracks().length > 0;
    client.setMute({ muted: !micOn || !hasAudio, cameraOff: !cameraOn || !hasVideo });
    renderToggles();
}

// ---- call timer and quality ----

function startTicking() {
    stopTicking();
    sampler = client.pc ? new StatsSampler(client.pc) : null;
    tick();
    tickTimer = window.setInterval(tick, 1000);
}

function stopTicking() {
    clearInterval(tickTimer);
    tickTimer = undefined;
    sampler = null;
    quality = null;
    callTimer.textContent = '';
    qualityBtn.dataset.level = 'unknown';
}

function tick() {
    const s = Math.floor((performance.now() - callStart) / 1000);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    const text = (h ? `${h}:${pad(m)}` : `${m}`) + `:${pad(sec)}`;
    callTimer.textContent = text;
    callTimer.setAttribute('aria-label', `Call time ${text}`);
    renderPeer();
    // The callee's PeerConnection exists only once Accept has run.
    if (!sampler && client.pc) sampler = new StatsSampler(client.pc);
    const smp = sampler;
    if (!smp || smp.pc !== client.pc) return;
    smp.sample().then((q) => {
        if (smp !== sampler) return;
        quality = q;
        renderQuality(q);
    }).catch(() => {});
}

/** @param {number} n */
function pad(n) { return String(n).padStart(2, '0'); }

const LEVEL_WORDS = { good: 'Good connection', fair: 'Fair connection', poor: 'Poor connection', unknown: 'Connection' };

/** @param {import('./stats.js').Quality} q */
function renderQuality(q) {
    qualityBtn.dataset.level = q.level;
    qualityBtn.textContent = LEVEL_WORDS[q.level];
    if (qualityPanel.hidden) return;
    const set = (/** @type {string} */ id, /** @type {string} */ v) => { $(id).textContent = v; };
    set('q-in', kbps(q.inKbps));
    set('q-out', kbps(q.outKbps));
    set('q-rtt', q.rttMs ? `${Math.round(q.rttMs)} ms` : '–');
    set('q-loss', `${q.lossPct.toFixed(1)} %`);
    set('q-jitter', `${Math.round(q.jitterMs)} ms`);
    set('q-video', q.width ? `${q.width}×${q.height}, ${Math.round(q.fps)} fps` : 'none');
    set('q-path', q.path || 'connecting');
}

/** @param {number} k */
function kbps(k) {
    return k >= 1000 ? `${(k / 1000).toFixed(1)} Mbit/s` : `${Math.round(k)} kbit/s`;
}

// ---- media ----

/**
 * Opens the camera and microphone for a call (or what of them there is).
 * @returns {Promise<MediaStream|null>} null: receive-only
 */
async function openLocal() {
    const r = await openMedia(prefs);
    mediaMode = r.mode;
    if (r.note) showError(r.note, r.mode === 'none' ? 'error' : 'info');
    if (r.stream) {
        for (const t of r.stream.getAudioTracks()) t.enabled = micOn;
        for (const t of r.stream.getVideoTracks()) t.enabled = cameraOn;
        setLocal(r.stream);
    }
    return r.stream;
}

/** @param {MediaStream} stream */
function setLocal(stream) {
    stopLocal();
    localStream = stream;
    localVideo.srcObject = stream;
    localVideo.classList.toggle('live', stream.getVideoTracks().length > 0);
    localVideo.play().catch(() => {});
    renderToggles();
}

/** Ends the call's camera and microphone (the light goes off). */
function stopLocal() {
    stopStream(localStream);
    localStream = null;
    localVideo.srcObject = null;
    localVideo.classList.remove('live');
    renderToggles();
}

/**
 * Switches the call's camera or microphone: stops the old device first
 * (at most one camera live), opens the new one and replaces the track the
 * call sends (no renegotiation).
 * @param {'audio'|'video'} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
    const stream = localStream;
    if (!stream) return;
    const old = stream.getTracks().filter((t) => t.kind === kind);
    if (old.length === 0) throw new Error('this call was started without one; it applies to the next call');
    for (const t of old) { t.stop(); stream.removeTrack(t); }
    const track = await openTrack(kind, deviceId);
    track.enabled = kind === 'audio' ? micOn : cameraOn;
    if (localStream !== stream) { track.stop(); return; }
    stream.addTrack(track);
    await client.replaceTrack(track);
    localVideo.srcObject = stream;
    localVideo.play().catch(() => {});
    savePrefs();
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
        renderPeer();
    });
}

function playRemote() {
    const stream = remoteVideo.srcObject;
    remoteVideo.play().catch((e) => {
        // Only a refused autoplay (NotAllowedError) means "no sound": a
        // play() cut off by the call's end (AbortError) means nothing.
        if (/** @type {DOMException} */ (e).name !== 'NotAllowedError') return;
        if (remoteVideo.srcObject !== stream || !inCall()) return;
        remoteVideo.muted = true;
        remoteVideo.play().catch(() => {});
        soundOff.hidden = false;
    });
}

soundOnBtn.addEventListener('click', () => {
    remoteVideo.muted = false;
    remoteVideo.play().catch(() => {});
    soundOff.hidden = true;
});

// ---- actions ----

/** Marks the start of a call and opens the camera (null: receive-only). */
async function startMedia() {
    clearError();
    picker.close(); // its own preview would be a second camera stream
    resetMarks();
    marks.callClicked = performance.now();
    starting = true;
    render();
    try {
        return await openLocal();
    } finally {
        starting = false;
    }
}

/** @param {string} name */
async function startCall(name) {
    name = name.trim();
    if (!name) {
        showError('Enter the name of the person to call');
        calleeInput.focus();
        return;
    }
    if (client.state !== 'idle' || starting) return;
    if (name === client.name) {
        showError('That is you: enter the name of someone else');
        return;
    }
    const stream = await startMedia();
    if (client.state !== 'idle') { // someone called us meanwhile
        stopLocal();
        return render();
    }
    calleeInput.value = '';
    // Failures during negotiation arrive through onError.
    await client.call(name, stream).catch((e) => showError(e.message));
    tellMute();
}

async function acceptCall() {
    if (client.state !== 'incoming' || starting) return;
    ringer.stop();
    const stream = await startMedia();
    if (client.state !== 'incoming') { // the caller gave up meanwhile
        stopLocal();
        return render();
    }
    // With no camera or permission the call goes on receive-only: Accept
    // never turns into a decline.
    const hasAudio = !!stream && stream.getAudioTracks().length > 0;
    const hasVideo = !!stream && stream.getVideoTracks().length > 0;
    client.localMute = { muted: !micOn || !hasAudio, cameraOff: !cameraOn || !hasVideo };
    await client.accept(stream).catch((e) => showError(e.message));
    renderToggles();
}

/**
 * What the person reads when a call ends.
 * @param {string} reason
 * @param {{peer: string, was: string, local: boolean}} info
 * @returns {string}
 */
function endMessage(reason, { peer, was, local }) {
    switch (reason) {
    case 'hangup':
        if (local) return was === 'calling' ? `You cancelled the call to ${peer}` : `You ended the call with ${peer}`;
        if (was === 'incoming') return `${peer} hung up before you answered`;
        if (was === 'calling') return `${peer} did not take the call`;
        return `${peer} hung up`;
    case 'declined':
        return local ? `You declined the call from ${peer}` : `${peer} declined the call`;
    case 'no answer':
        return was === 'incoming' ? `You did not answer ${peer}` : `${peer} did not answer`;
    case 'busy':
        return `${peer} is in another call. Try again later.`;
    case 'disconnected':
        return `The call with ${peer} was lost: the connection dropped`;
    case 'connection failed':
        return `The call with ${peer} was lost: the network connection failed`;
    case 'server shutting down':
        return 'The server is restarting, so the call ended. Try again in a minute.';
    default:
        if (reason.startsWith('error: ')) return `The call could not be set up: ${reason.slice(7)}`;
        // A refusal from the server (not online, busy, ...): its sentence
        // is in the banner already.
        return peer ? `The call to ${peer} did not go through` : 'Ready: pick someone to call';
    }
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
        nameInput.focus();
        return;
    }
    loginError.textContent = '';
    clearError();
    loginBtn.disabled = true;
    // A user gesture: let the ringtone play later.
    ringer.unlock();
    try {
        const r = await client.login(name, authToken);
        if (r.success) loggedIn = true;
        else {
            loginError.textContent = r.message || 'Sign-in failed';
            nameInput.focus();
        }
    } catch (err) {
        loginError.textContent = /** @type {Error} */ (err).message || 'Cannot connect to the server';
    } finally {
        loginBtn.disabled = false;
    }
});

callForm.addEventListener('submit', (e) => {
    e.preventDefault();
    startCall(calleeInput.value);
});

for (const list of [usersList, missedList]) {
    list.addEventListener('click', (e) => {
        const target = /** @type {HTMLElement} */ (e.target);
        const b = target.closest('button[data-name]');
        if (b instanceof HTMLButtonElement && b.dataset.name) startCall(b.dataset.name);
    });
}

acceptBtn.addEventListener('click', () => { acceptCall(); });
declineBtn.addEventListener('click', () => client.decline());
signoutBtn.addEventListener('click', () => client.close());
hangupBtn.addEventListener('click', () => client.hangUp());
errorClose.addEventListener('click', clearError);

// Enter accepts, Esc declines while the phone rings (a focused button keeps
// its own Enter: Decline focused + Enter declines).
document.addEventListener('keydown', (e) => {
    if (client.state !== 'incoming' || picker.isOpen) return;
    if (e.key === 'Escape') {
        e.preventDefault();
        client.decline();
    } else if (e.key === 'Enter' && !(e.target instanceof HTMLButtonElement)) {
        e.preventDefault();
        acceptCall();
    }
});

muteBtn.addEventListener('click', () => {
    micOn = !micOn;
    if (localStream) for (const t of localStream.getAudioTracks()) t.enabled = micOn;
    tellMute();
});

cameraBtn.addEventListener('click', () => {
    cameraOn = !cameraOn;
    if (localStream) for (const t of localStream.getVideoTracks()) t.enabled = cameraOn;
    tellMute();
});

fitBtn.addEventListener('click', () => {
    document.body.dataset.fit = document.body.dataset.fit === 'cover' ? 'contain' : 'cover';
    renderToggles();
});

fullscreenBtn.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else if (stage.requestFullscreen) stage.requestFullscreen().catch((e) => showError(`Full screen is not available: ${e.message}`));
});
document.addEventListener('fullscreenchange', () => {
    fullscreenBtn.setAttribute('aria-pressed', String(!!document.fullscreenElement));
});

pipBtn.addEventListener('click', () => {
    if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
    else remoteVideo.requestPictureInPicture().catch((e) => showError(`Picture in picture is not available: ${e.message}`));
});

qualityBtn.addEventListener('click', () => {
    qualityPanel.hidden = !qualityPanel.hidden;
    qualityBtn.setAttribute('aria-expanded', String(!qualityPanel.hidden));
    if (quality) renderQuality(quality);
});

notifyBtn.addEventListener('click', () => {
    const N = window.Notification;
    if (N) N.requestPermission().then(() => render()).catch(() => {});
});

const picker = new DevicePicker({
    callStream: () => (inCall() ? localStream : null),
    switchDevice,
    setSpeaker: async (id) => {
        const v = /** @type {any} */ (remoteVideo);
        if (typeof v.setSinkId === 'function') await v.setSinkId(id);
        savePrefs();
    },
    prefs,
    onClose: () => { savePrefs(); renderToggles(); },
});
for (const b of [devicesBtn, settingsBtn]) b.addEventListener('click', () => { picker.open(); });

/** @returns {{cameraId?: string, micId?: string, speakerId?: string}} */
function loadPrefs() {
    try {
        const p = JSON.parse(localStorage.getItem('videochat.devices') || '{}');
        return p && typeof p === 'object' ? p : {};
    } catch {
        return {};
    }
}

function savePrefs() {
    try {
        localStorage.setItem('videochat.devices', JSON.stringify(prefs));
    } catch {
        // private mode: choices last for this visit only
    }
}

// ---- protocol events ----

client.onStateChange = () => render();

client.onConnectionChange = () => render();

client.onPeerMute = () => renderPeer();

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

client.onIncomingCall = () => {
    clearError();
    render();
};

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

client.onCallEnded = (reason, info) => {
    remoteVideo.srcObject = null;
    frameWatch++;
    soundOff.hidden = true;
    stopLocal();
    mediaMode = 'none';
    picker.refresh();
    if (info.was === 'incoming' && !info.local && reason !== 'declined') {
        const d = new Date();
        missed.push({ name: info.peer, at: `${pad(d.getHours())}:${pad(d.getMinutes())}` });
        renderMissed();
        setStatus(`Missed call from ${info.peer}`);
    } else {
        setStatus(endMessage(reason, info));
    }
    render();
};

client.onError = (/** @type {string} */ message) => showError(message);

client.onClose = (/** @type {string} */ message) => {
    stopLocal();
    picker.close();
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
    nameInput.focus();
};

ringer.onNotificationClick = () => acceptBtn.focus();

renderToggles();
renderUsers();
render();
