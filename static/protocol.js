// @ts-check
// Protocol module: the WebSocket signaling and the one RTCPeerConnection to
// the server (an SFU). No DOM access; the UI (app.js) listens to callbacks.
// The wire contract is PROTOCOL.md.

/**
 * @typedef {'signin'|'idle'|'calling'|'incoming'|'connected'} CallState
 *
 * @typedef {Object} ClientOptions
 * @property {string} url - WebSocket URL of the signaling endpoint.
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] - 'all' (default) or 'relay'.
 *
 * @typedef {Object} LoginResult
 * @property {boolean} success
 * @property {string} [message]
 *
 * @typedef {'open'|'reconnecting'|'closed'} ConnectionState
 *   the signaling connection: 'reconnecting' while a lost WebSocket is being
 *   replaced (the session and the call live on meanwhile)
 * @typedef {'new'|'connected'|'reconnecting'} MediaState
 *   our PeerConnection to the server, as the UI cares about it
 */

/** Heartbeat: a ping every PING_INTERVAL; no frame for DEAD_AFTER = dead socket. */
const PING_INTERVAL = 5000;
const DEAD_AFTER = 10000;
/**
 * A socket whose ping is unanswered this long is suspect: messages wait
 * (in order) until it proves alive or is replaced, so that nothing is sent
 * into a dead socket and nobody has to guess whether it arrived.
 */
const SUSPECT_AFTER = 2500;
/** Reconnect delays (ms): 0.5, 1, 2, 4, then 5 s until GIVE_UP_AFTER. */
const RECONNECT_DELAYS = [500, 1000, 2000, 4000, 5000];
const GIVE_UP_AFTER = 60000;
/** A new WebSocket must open, and answer resume, within this. */
const CONNECT_TIMEOUT = 5000;
/** ICE: restart after this long in 'disconnected'; retry a restart every RESTART_RETRY. */
const DISCONNECTED_GRACE = 2000;
const RESTART_RETRY = 5000;
const MAX_RESTARTS = 12;
/**
 * Chromium calls ICE 'disconnected' only after ~5 s of unanswered checks;
 * the page notices sooner that nothing arrives: no byte received on the
 * transport for STALL_AFTER (sampled every STALL_SAMPLE) shows "Reconnecting…".
 */
const STALL_SAMPLE = 500;
const STALL_AFTER = 2000;

/** A client of the video chat server: one WebSocket, at most one call. */
export class VideoChatClient {
    /** @param {ClientOptions} options */
    constructor(options) {
        this.options = options;
        /** @type {WebSocket|null} */
        this.socket = null;
        /** @type {CallState} */
        this.state = 'signin';
        /** Our own name once logged in. */
        this.name = '';
        /** The other party of the current call, or ''. */
        this.peer = '';
        /** Why the last call ended. */
        this.lastEndReason = '';
        /** @type {RTCIceServer[]} */
        this.iceServers = [];
        /** @type {RTCPeerConnection|null} */
        this.pc = null;
        /** @type {MediaStream|null} The remote media of the current call. */
        this.remoteStream = null;

        /** The resume token of our login (PROTOCOL.md, Session resume). */
        this.session = '';
        /** @type {ConnectionState} */
        this.connection = 'closed';
        /** @type {MediaState} our media connection to the server */
        this.mediaState = 'new';
        /** @type {'connected'|'reconnecting'} the other participant's, from callstate */
        this.peerState = 'connected';
        /** Counters for tests and diagnostics. */
        this.resumes = 0;
        this.reconnectAttempts = 0;
        this.iceRestarts = 0;
        /** @type {{t: number, what: string}[]} recent connection events (performance.now()) */
        this.events = [];

        /** @type {RTCSessionDescriptionInit|null} offer of a ringing call */
        this._pendingOffer = null;
        /** @type {RTCIceCandidateInit[]} server candidates before the remote description */
        this._pendingCandidates = [];
        /** true once the server answered our offer (caller side) */
        this._answered = false;
        /** Serialises every asynchronous PeerConnection step. */
        this._queue = Promise.resolve();
        /** @type {((r: LoginResult) => void)|null} */
        this._loginResolve = null;
        /** the name of the login in flight */
        this._loginName = '';

        /** @type {{type: string}[]} messages waiting for the socket to come back */
        this._outbox = [];
        /** @type {{type: string}[]} messages held while the socket is suspect */
        this._held = [];
        /** true while a new socket waits for its resume reply */
        this._resuming = false;
        /** true after close(): nothing reconnects */
        this._signedOut = false;
        /** performance.now() of the last frame received */
        this._lastFrame = 0;
        /** @type {number|undefined} */
        this._pingTimer = undefined;
        /** @type {number|undefined} */
        this._reconnectTimer = undefined;
        /** performance.now() when the socket was lost, 0 when not reconnecting */
        this._lostAt = 0;
        /** @type {WebSocket[]} sockets given up on, closed once the session is back */
        this._abandoned = [];
        /** @type {number|undefined} ICE: disconnected grace, restart retry */
        this._iceTimer = undefined;
        /** restarts since the media connection was last connected */
        this._restartsInRow = 0;
        /** true while no packet arrives on the media transport */
        this._stalled = false;
        /** @type {number|undefined} */
        this._stallTimer = undefined;
        /** performance.now() of our unanswered ICE-restart offer, or 0 */
        this._restartOfferAt = 0;
        /** the unanswered restart was for a network change (not lost media) */
        this._restartForChange = false;
        /** @type {number|undefined} */
        this._resumeTimer = undefined;
        /** index into RECONNECT_DELAYS, and when the last attempt started */
        this._reconnectIndex = 0;
        this._attemptAt = 0;
        /** performance.now() of the last ping, and of the first unanswered one (0: none) */
        this._lastPing = 0;
        this._awaitingSince = 0;

        // Callbacks, to be replaced by the UI.
        /** @type {(success: boolean, message: string) => void} */
        this.onLogin = () => {};
        /** @type {(users: string[], total: number) => void} online names (the server lists at most ~100: total counts everyone online) */
        this.onUsers = () => {};
        /** @type {(name: string) => void} */
        this.onIncomingCall = () => {};
        /** @type {(name: string) => void} the callee accepted our call */
        this.onAccepted = () => {};
        /** @type {(track: MediaStreamTrack, stream: MediaStream) => void} */
        this.onRemoteTrack = () => {};
        /** @type {(reason: string) => void} */
        this.onCallEnded = () => {};
        /** @type {(message: string) => void} */
        this.onError = () => {};
        /** @type {(state: CallState) => void} */
        this.onStateChange = () => {};
        /** @type {(pc: RTCPeerConnection) => void} a new PeerConnection exists */
        this.onPeerConnection = () => {};
        /**
         * The session is over and the client is back in 'signin': signed out,
         * the WebSocket closed before login, or a lost one could not be
         * resumed (message says why; '' after sign-out).
         * @type {(message: string) => void}
         */
        this.onClose = () => {};
        /** @type {() => void} connection, mediaState or peerState changed */
        this.onConnectionChange = () => {};
        /** true when the server said it records the current call */
        this.recording = false;
        /** @type {(recording: boolean) => void} */
        this.onRecording = () => {};
    }

    /**
     * Opens the WebSocket if it is not open yet.
     * @returns {Promise<void>}
     */
    connect() {
        const s = this.socket;
        if (s && s.readyState === WebSocket.OPEN) return Promise.resolve();
        if (s && s.readyState === WebSocket.CONNECTING) {
            return new Promise((resolve, reject) => {
                s.addEventListener('open', () => resolve(), { once: true });
                s.addEventListener('close', () => reject(new Error('Cannot connect to server')), { once: true });
            });
        }
        this._signedOut = false;
        return new Promise((resolve, reject) => {
            const ws = this._openSocket();
            ws.addEventListener('open', () => {
                this._lastFrame = performance.now();
                this._setConnection('open');
                resolve();
            }, { once: true });
            ws.addEventListener('close', () => reject(new Error('Cannot connect to server')), { once: true });
        });
    }

    /**
     * Claims a name. Resolves with the server's reply (onLogin fires too).
     * @param {string} name
     * @param {string} [token] sign-in token (a JWT) when the server requires one
     * @returns {Promise<LoginResult>}
     */
    async login(name, token) {
        await this.connect();
        return new Promise((resolve) => {
            this._loginResolve = resolve;
            this._loginName = name.trim();
            /** @type {{type: string, name: string, token?: string}} */
            const msg = { type: 'login', name: this._loginName };
            if (token) msg.token = token;
            this._send(msg);
        });
    }

    /**
     * Signs out: closes the WebSocket with a close frame (the server logs us
     * out at once and ends any call) and stops reconnecting.
     */
    close() {
        this._signedOut = true;
        clearTimeout(this._reconnectTimer);
        const ws = this.socket;
        if (ws && ws.readyState === WebSocket.OPEN && !this._lostAt) {
            ws.close(1000, 'sign out'); // its close event ends the session here
            return;
        }
        // Reconnecting: a resume attempt that is open gets the close frame
        // (ending the session if the resume went through); otherwise the
        // server ends it after its grace period.
        if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000, 'sign out');
        if (ws) this._detach(ws);
        this._endSession('');
    }

    /**
     * The network is back (media arrives again): a reconnect attempt that
     * started in the dark may sit in TCP's SYN backoff for seconds, so start
     * a fresh one now; an open socket gets a ping to prove itself.
     */
    _kickSignaling() {
        if (this._signedOut) return;
        if (!this._lostAt) {
            if (this.connection === 'open' && this.socket && this.socket.readyState === WebSocket.OPEN) {
                this._lastPing = performance.now();
                if (!this._awaitingSince) this._awaitingSince = this._lastPing;
                this.socket.send(JSON.stringify({ type: 'ping' }));
            }
            return;
        }
        const ws = this.socket;
        if (ws && ws.readyState === WebSocket.OPEN) return; // waiting for its resume reply
        this._log('network back: reconnecting now');
        if (ws) {
            ws.onclose = null;
            ws.close(); // still connecting: no close frame
            this._detach(ws);
        }
        this._resuming = false;
        clearTimeout(this._resumeTimer);
        clearTimeout(this._reconnectTimer);
        this._reconnectIndex = 0;
        this._reconnect();
    }

    /**
     * The network may have changed (the page saw 'online' or a
     * navigator.connection change): restart ICE during a call, and check the
     * WebSocket at once instead of at the next heartbeat.
     */
    networkChanged() {
        this._log('network change');
        const ws = this.socket;
        if (!this._lostAt && ws && ws.readyState === WebSocket.OPEN && this.session && this.state !== 'signin') {
            // The socket may be bound to the old network and die silently:
            // resume on a fresh one now (the server closes the old one).
            this._detach(ws);
            this._socketLost(true);
        } else {
            this._kickSignaling();
        }
        if (this.pc && (this.state === 'calling' || this.state === 'connected')) this._restartIce('network change');
    }

    /**
     * Calls a user: sends our offer; the server answers at once, and
     * 'accepted' follows when the callee picks up.
     * @param {string} name
     * @param {MediaStream} localStream
     * @returns {Promise<void>}
     */
    call(name, localStream) {
        name = name.trim();
        if (this.state !== 'idle') return Promise.reject(new Error('Already in a call'));
        if (!name) return Promise.reject(new Error('Enter the name of the person to call'));
        this.peer = name;
        this._answered = false;
        this._setState('calling');
        const pc = this._newPeerConnection();
        for (const t of localStream.getTracks()) pc.addTrack(t, localStream);
        return this._enqueue(async () => {
            const offer = await pc.createOffer();
            if (pc !== this.pc) return;
            await pc.setLocalDescription(offer);
            if (pc !== this.pc) return;
            this._send({ type: 'offer', name, offer: descJSON(pc.localDescription) });
        }, pc);
    }

    /**
     * Accepts the ringing call: answers the server's offer with our media.
     * @param {MediaStream} localStream
     * @returns {Promise<void>}
     */
    accept(localStream) {
        const offer = this._pendingOffer;
        if (this.state !== 'incoming' || !offer) return Promise.reject(new Error('No incoming call'));
        this._pendingOffer = null;
        const name = this.peer;
        this._setState('connected');
        const pc = this._newPeerConnection();
        return this._enqueue(async () => {
            await pc.setRemoteDescription(offer);
            if (pc !== this.pc) return;
            // addTrack reuses the offered transceivers, so the answer is sendrecv.
            for (const t of localStream.getTracks()) pc.addTrack(t, localStream);
            await this._flushCandidates(pc);
            const answer = await pc.createAnswer();
            if (pc !== this.pc) return;
            await pc.setLocalDescription(answer);
            if (pc !== this.pc) return;
            this._send({ type: 'answer', name, answer: descJSON(pc.localDescription) });
        }, pc);
    }

    /** Declines the ringing call. */
    decline() {
        if (this.state !== 'incoming') return;
        this._send({ type: 'leave', name: this.peer });
        this._endCall('declined');
    }

    /** Hangs up (or cancels an outgoing call). */
    hangUp() {
        if (this.state === 'incoming') return this.decline();
        if (this.state !== 'calling' && this.state !== 'connected') return;
        this._send({ type: 'leave', name: this.peer });
        this._endCall('hangup');
    }

    // ---- internals ----

    /**
     * Sends a message; while a lost connection is being resumed, queues it
     * (in order) for the new one. Pings are never queued.
     * @param {{type: string} & Object<string, any>} msg
     */
    _send(msg) {
        const ws = this.socket;
        if (ws && ws.readyState === WebSocket.OPEN && !this._resuming) {
            if (this._held.length || this._suspect()) {
                if (msg.type !== 'ping') this._held.push(msg);
                return;
            }
            ws.send(JSON.stringify(msg));
            return;
        }
        if (this._lostAt && msg.type !== 'ping') this._outbox.push(msg);
    }

    /**
     * Whether the socket may be dead: a ping unanswered for SUSPECT_AFTER,
     * or no media and no frame for a second (then a ping probes it, and
     * its pong releases what waits).
     * @returns {boolean}
     */
    _suspect() {
        const now = performance.now();
        if (this._awaitingSince) return now - this._awaitingSince > SUSPECT_AFTER;
        if (!this._stalled || now - this._lastFrame < 1000) return false;
        const ws = this.socket;
        if (ws && ws.readyState === WebSocket.OPEN) {
            this._lastPing = this._awaitingSince = now;
            ws.send(JSON.stringify({ type: 'ping' }));
        }
        return true;
    }

    /** @param {string} what */
    _log(what) {
        this.events.push({ t: performance.now(), what });
        if (this.events.length > 300) this.events.splice(0, this.events.length - 300);
        console.debug(`[videochat] ${what}`);
    }

    /** @param {ConnectionState} c */
    _setConnection(c) {
        if (this.connection === c) return;
        this.connection = c;
        this._log(`signaling ${c}`);
        this.onConnectionChange();
    }

    /** @param {MediaState} m */
    _setMedia(m) {
        if (this.mediaState === m) return;
        this.mediaState = m;
        this.onConnectionChange();
    }

    // ---- the WebSocket: heartbeat, loss, resume ----

    /** @returns {WebSocket} a new socket, now this.socket */
    _openSocket() {
        const ws = new WebSocket(this.options.url);
        this.socket = ws;
        ws.onmessage = (e) => this._onFrame(ws, e.data);
        ws.onclose = () => this._onSocketClose(ws);
        return ws;
    }

    /**
     * Stops listening to a socket we gave up on. It is not closed yet if it
     * is open: a close frame would end the session at the server; it is
     * closed once the session lives on another connection (or is over).
     * @param {WebSocket} ws
     * @returns {WebSocket}
     */
    _detach(ws) {
        ws.onclose = null;
        if (ws.readyState === WebSocket.OPEN) {
            if (!this._abandoned.includes(ws)) this._abandoned.push(ws);
        } else {
            ws.onmessage = null;
        }
        if (this.socket === ws) this.socket = null;
        return ws;
    }

    _closeAbandoned() {
        for (const ws of this._abandoned) {
            ws.onmessage = null;
            ws.close();
        }
        this._abandoned = [];
    }

    /** @param {WebSocket} ws @param {any} data */
    _onFrame(ws, data) {
        // An abandoned socket that turns out to be alive still speaks for
        // the session until the session moves to another connection.
        if (ws !== this.socket && !this._abandoned.includes(ws)) return;
        this._lastFrame = performance.now();
        this._awaitingSince = 0;
        if (this._held.length && ws === this.socket && !this._resuming) {
            // The suspect socket is alive after all.
            const held = this._held;
            this._held = [];
            for (const m of held) ws.send(JSON.stringify(m));
        }
        this._onMessage(data, ws);
    }

    /** @param {WebSocket} ws */
    _onSocketClose(ws) {
        this._abandoned = this._abandoned.filter((x) => x !== ws);
        if (ws !== this.socket) return;
        this.socket = null;
        if (this._lostAt) { // an attempt to resume failed
            this._resuming = false;
            clearTimeout(this._resumeTimer);
            this._scheduleReconnect();
            return;
        }
        this._socketLost();
    }

    /**
     * The current socket is gone (closed, or dead by the heartbeat).
     * @param {boolean} [now] reconnect at once, not after the first delay
     */
    _socketLost(now = false) {
        this._stopHeartbeat();
        const loggedIn = !!this.session && this.state !== 'signin' && !this._signedOut;
        if (!loggedIn) {
            this._endSession(this._signedOut || this.state === 'signin' ? '' : 'Disconnected from server');
            return;
        }
        this._lostAt = performance.now();
        this._reconnectIndex = 0;
        this._attemptAt = 0;
        this._outbox = this._held.concat(this._outbox);
        this._held = [];
        this._log(now ? 'network changed: moving to a new websocket' : 'websocket lost');
        this._setConnection('reconnecting');
        if (now) this._reconnect();
        else this._scheduleReconnect();
    }

    _scheduleReconnect() {
        clearTimeout(this._reconnectTimer);
        if (this._signedOut || !this._lostAt) return;
        const i = Math.min(this._reconnectIndex || 0, RECONNECT_DELAYS.length - 1);
        this._reconnectIndex = (this._reconnectIndex || 0) + 1;
        // An attempt that timed out has waited already: the backoff counts
        // from its start (a black hole is retried every CONNECT_TIMEOUT).
        const waited = this._attemptAt ? performance.now() - this._attemptAt : 0;
        this._reconnectTimer = setTimeout(() => this._reconnect(), Math.max(0, RECONNECT_DELAYS[i] - waited));
    }

    _reconnect() {
        this._reconnectTimer = undefined;
        if (this._signedOut || !this._lostAt || this.socket) return;
        if (performance.now() - this._lostAt > GIVE_UP_AFTER) {
            this._endSession('Lost the connection to the server');
            return;
        }
        this.reconnectAttempts++;
        this._attemptAt = performance.now();
        this._log(`reconnect attempt ${this.reconnectAttempts}`);
        const ws = this._openSocket();
        this._resuming = true;
        ws.onopen = () => {
            this._lastFrame = performance.now();
            ws.send(JSON.stringify({ type: 'resume', session: this.session }));
        };
        clearTimeout(this._resumeTimer);
        // A socket that neither opens nor answers in time (a black-holed
        // network) is given up for a fresh attempt.
        this._resumeTimer = setTimeout(() => {
            if (this.socket !== ws || !this._resuming) return;
            this._log('resume attempt timed out');
            if (ws.readyState === WebSocket.CONNECTING) {
                ws.onclose = null;
                ws.close(); // not open yet: no close frame
            }
            this._detach(ws);
            this._resuming = false;
            this._scheduleReconnect();
        }, CONNECT_TIMEOUT);
    }

    /**
     * The reply to resume.
     * @param {any} msg
     * @param {WebSocket} ws the socket it came on
     */
    _onResumeReply(msg, ws) {
        if (!msg.success) {
            if (ws !== this.socket || !this._resuming) return; // an older attempt's spent token
            this._log(`resume failed: ${msg.message || ''}`);
            this._endSession(msg.message
                ? `Connection lost; the session could not be resumed: ${msg.message}`
                : 'Connection lost; the session could not be resumed. Please sign in again.');
            return;
        }
        // The session now lives on ws (possibly an attempt we had given up on).
        clearTimeout(this._resumeTimer);
        clearTimeout(this._reconnectTimer);
        const current = this.socket;
        if (current && current !== ws) {
            this._detach(current);
            if (current.readyState === WebSocket.CONNECTING) current.close();
        }
        this._abandoned = this._abandoned.filter((x) => x !== ws);
        this.socket = ws;
        ws.onclose = () => this._onSocketClose(ws);
        ws.onmessage = (e) => this._onFrame(ws, e.data);
        this._closeAbandoned();
        this._resuming = false;
        const lostFor = performance.now() - this._lostAt;
        this._lostAt = 0;
        this.resumes++;
        if (typeof msg.session === 'string' && msg.session) this.session = msg.session;
        if (typeof msg.name === 'string' && msg.name) this.name = msg.name;
        if (Array.isArray(msg.iceServers)) {
            this.iceServers = msg.iceServers;
            if (this.pc) {
                try {
                    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: this.iceServers });
                } catch (e) {
                    console.warn('setConfiguration', e);
                }
            }
        }
        this._log(`resumed after ${Math.round(lostFor)} ms`);
        this._setConnection('open');
        this._startHeartbeat();
        const pc = this.pc;
        const offerAt = this._outbox.findIndex((m) => m.type === 'offer');
        if (pc && offerAt >= 0 && this._restartOfferAt && !this._restartForChange && iceUp(pc)) {
            // Our restart offer never left, and the media came back on the
            // old credentials meanwhile: take the offer back (with the new
            // candidates) rather than disturb a working connection.
            this._outbox = this._outbox.filter((m, i) => i < offerAt || (m.type !== 'offer' && m.type !== 'candidate'));
            this._restartOfferAt = 0;
            this._log('unsent restart offer taken back: the media is back');
            this._enqueue(async () => {
                if (pc === this.pc && pc.signalingState === 'have-local-offer') {
                    await pc.setLocalDescription({ type: 'rollback' });
                }
            });
        }
        const inCall = this.state === 'calling' || this.state === 'connected';
        if (inCall && !msg.call) {
            // The server ended the call while we were away.
            this._outbox = this._outbox.filter((m) => !['offer', 'answer', 'candidate'].includes(m.type));
            this._endCall('disconnected');
        }
        const queued = this._outbox;
        this._outbox = [];
        for (const m of queued) this._send(m);
        // A restart offer sent on the dead socket is lost unless the server
        // got it (its answer then comes with the queued messages, which
        // follow the reply at once); a duplicate offer is harmless anyway.
        if (pc && this._restartOfferAt && !queued.some((m) => m.type === 'offer')) {
            setTimeout(() => this._resendOffer(pc), 200);
        } else if (pc && pc.remoteDescription && !iceUp(pc) && pc.signalingState === 'stable') {
            // The media is down too: restart now rather than at the next retry.
            this._restartIce('signaling resumed, media down');
        }
    }

    _startHeartbeat() {
        this._stopHeartbeat();
        this._awaitingSince = 0;
        this._lastPing = performance.now();
        this._pingTimer = setInterval(() => this._heartbeat(), 1000);
    }

    _stopHeartbeat() {
        clearInterval(this._pingTimer);
        this._pingTimer = undefined;
    }

    _heartbeat() {
        const ws = this.socket;
        if (!ws || this._resuming || ws.readyState !== WebSocket.OPEN) return;
        const now = performance.now();
        // Dead: no frame for DEAD_AFTER, and a ping has been unanswered for
        // a whole interval (a throttled background timer that woke up late
        // sends a ping first and judges later).
        if (this._awaitingSince && now - this._awaitingSince >= PING_INTERVAL && now - this._lastFrame >= DEAD_AFTER) {
            this._log('heartbeat: no frame for 10 s, the socket is dead');
            this._detach(ws);
            this._socketLost();
            return;
        }
        if (now - this._lastPing >= PING_INTERVAL) {
            this._lastPing = now;
            if (!this._awaitingSince) this._awaitingSince = now;
            ws.send(JSON.stringify({ type: 'ping' }));
        }
    }

    /**
     * The session is over: back to sign-in.
     * @param {string} message why, for the person ('' after signing out)
     */
    _endSession(message) {
        this._stopHeartbeat();
        clearTimeout(this._reconnectTimer);
        clearTimeout(this._resumeTimer);
        this._closeAbandoned();
        const ws = this.socket;
        if (ws) {
            this.socket = null;
            ws.onclose = null;
            ws.onmessage = null;
            ws.close();
        }
        this._lostAt = 0;
        this._resuming = false;
        this._outbox = [];
        this._held = [];
        this.session = '';
        const inCall = this.state !== 'idle' && this.state !== 'signin';
        if (inCall) this._endCall('disconnected');
        this.name = '';
        this._setConnection('closed');
        this._setState('signin');
        if (this._loginResolve) {
            this._loginResolve({ success: false, message: message || 'Disconnected from server' });
            this._loginResolve = null;
        }
        this.onClose(message);
    }

    // ---- the media connection: ICE restart ----

    /** @param {RTCPeerConnection} pc */
    _onPcState(pc) {
        if (pc !== this.pc) return;
        const ice = pc.iceConnectionState, conn = pc.connectionState;
        this._log(`ice ${ice}, connection ${conn}`);
        this._watchPair(pc);
        if (ice === 'connected' || ice === 'completed') {
            if (conn === 'failed' || conn === 'disconnected') return; // DTLS; wait for its own event
            clearTimeout(this._iceTimer);
            this._iceTimer = undefined;
            this._restartsInRow = 0;
            if (!this._stalled) this._setMedia('connected');
            this._watchStall(pc);
            return;
        }
        if (ice === 'failed' || conn === 'failed') {
            this._setMedia('reconnecting');
            this._restartIce(`ice ${ice}`);
            return;
        }
        if (ice === 'disconnected' || conn === 'disconnected') {
            // Chromium also flips to 'disconnected' for a few ms right after
            // a recovery (its write timeout fires late): do not flash it.
            setTimeout(() => {
                if (pc === this.pc && !iceUp(pc)) this._setMedia('reconnecting');
            }, 250);
            if (this._iceTimer === undefined) {
                this._iceTimer = setTimeout(() => {
                    this._iceTimer = undefined;
                    if (!iceUp(pc)) this._restartIce('disconnected for 2 s');
                }, DISCONNECTED_GRACE);
            }
        }
    }

    /**
     * Logs each change of the selected candidate pair (an ICE restart ends
     * with one).
     * @param {RTCPeerConnection} pc
     */
    _watchPair(pc) {
        const sender = pc.getSenders().find((s) => s.transport);
        const it = sender && sender.transport ? sender.transport.iceTransport : null;
        if (!it || watchedTransports.has(it)) return;
        watchedTransports.add(it);
        it.addEventListener('selectedcandidatepairchange', () => {
            if (pc !== this.pc) return;
            const p = it.getSelectedCandidatePair();
            const r = p && p.remote;
            this._log(`selected pair -> ${r ? `${r.address}:${r.port} ufrag ${r.usernameFragment}` : 'none'}`);
        });
    }

    /**
     * Sends our unanswered (restart) offer again, unchanged: the first copy
     * may have died with a dead socket. Safe if both arrive: the same ICE
     * credentials get the same answer, and a second answer finds us stable
     * and is ignored.
     * @param {RTCPeerConnection} pc
     */
    _resendOffer(pc) {
        if (pc !== this.pc || pc.signalingState !== 'have-local-offer' || !pc.localDescription) return;
        if (this.connection !== 'open') return; // the resume path sends it
        if (this._outbox.some((m) => m.type === 'offer') || this._held.some((m) => m.type === 'offer')) return;
        this._log('restart offer unanswered: sending it again');
        this._restartOfferAt = performance.now();
        this._send({ type: 'offer', name: this.peer, offer: descJSON(pc.localDescription) });
    }

    /**
     * Samples the transport's received bytes while in a call: nothing new
     * for STALL_AFTER marks the media as reconnecting, anything new ends it.
     * @param {RTCPeerConnection} pc
     */
    _watchStall(pc) {
        if (this._stallTimer !== undefined) return;
        let last = -1, changed = performance.now();
        this._stallTimer = setInterval(async () => {
            if (pc !== this.pc) return;
            let bytes = 0;
            try {
                const report = await pc.getStats();
                report.forEach((r) => { if (r.type === 'transport') bytes += r.bytesReceived || 0; });
            } catch (e) {
                return;
            }
            if (pc !== this.pc) return;
            const now = performance.now();
            if (bytes !== last) {
                last = bytes;
                changed = now;
                if (this._stalled) {
                    this._stalled = false;
                    this._log('packets arrive again');
                    if (iceUp(pc)) this._setMedia('connected');
                    this._kickSignaling();
                }
            } else if (!this._stalled && now - changed >= STALL_AFTER && this.mediaState === 'connected'
                && this.state === 'connected') {
                this._stalled = true;
                this._log(`no packet for ${Math.round(now - changed)} ms`);
                this._setMedia('reconnecting');
            }
        }, STALL_SAMPLE);
    }

    /**
     * Restarts ICE (new credentials, fresh candidates): pc.restartIce() and
     * an offer to the server, which answers it; retried every RESTART_RETRY
     * until the media connection is back or the call ends.
     * @param {string} why
     */
    _restartIce(why) {
        const pc = this.pc;
        if (!pc || (this.state !== 'calling' && this.state !== 'connected')) return;
        if (this._restartsInRow >= MAX_RESTARTS) {
            this._log('ICE restarts exhausted');
            this._send({ type: 'leave', name: this.peer });
            this._endCall('connection failed');
            return;
        }
        clearTimeout(this._iceTimer);
        this._iceTimer = setTimeout(() => {
            this._iceTimer = undefined;
            if (pc !== this.pc) return;
            if (!iceUp(pc)) this._restartIce('not back yet');
            else if (this._restartOfferAt && pc.signalingState === 'have-local-offer') this._resendOffer(pc);
        }, RESTART_RETRY);
        this._enqueue(async () => {
            try {
                if (pc !== this.pc || !pc.remoteDescription) return;
                if (pc.signalingState === 'have-local-offer') {
                    // Our earlier restart offer is unanswered: it waits in
                    // the outbox, or it was lost with a dead socket.
                    if (this._restartOfferAt && performance.now() - this._restartOfferAt >= RESTART_RETRY - 500) {
                        this._resendOffer(pc);
                    }
                    return;
                }
                if (pc !== this.pc || pc.signalingState !== 'stable') return;
                this._restartsInRow++;
                this.iceRestarts++;
                this._log(`ICE restart (${why})`);
                pc.restartIce();
                const offer = await pc.createOffer();
                if (pc !== this.pc || pc.signalingState !== 'stable') return;
                await pc.setLocalDescription(offer);
                if (pc !== this.pc) return;
                this._restartOfferAt = performance.now();
                this._restartForChange = why === 'network change';
                this._send({ type: 'offer', name: this.peer, offer: descJSON(pc.localDescription) });
            } catch (e) {
                console.warn('ICE restart failed', e);
                this._log(`ICE restart error: ${e instanceof Error ? e.message : e}`);
            }
        });
    }

    /** @param {CallState} state */
    _setState(state) {
        if (this.state === state) return;
        this.state = state;
        this.onStateChange(state);
    }

    /**
     * Runs fn after every earlier step; errors are reported, not thrown
     * further, unless they concern the current PeerConnection's call setup.
     * @param {() => Promise<void>} fn
     * @param {RTCPeerConnection|null} [pc] the PeerConnection fn works on
     * @returns {Promise<void>}
     */
    _enqueue(fn, pc = null) {
        const p = this._queue.then(fn).catch((e) => {
            if (pc && pc !== this.pc) return; // the call is over; ignore
            this._failCall(e instanceof Error ? e.message : String(e));
        });
        this._queue = p;
        return p;
    }

    /** @returns {RTCPeerConnection} */
    _newPeerConnection() {
        /** @type {RTCConfiguration} */
        const config = {
            iceServers: this.iceServers,
            iceTransportPolicy: this.options.iceTransportPolicy || 'all',
            bundlePolicy: 'max-bundle',
        };
        const pc = new RTCPeerConnection(config);
        this.pc = pc;
        this.remoteStream = new MediaStream();
        pc.onicecandidate = (e) => {
            if (pc !== this.pc || !e.candidate) return;
            this._send({ type: 'candidate', name: this.peer, candidate: e.candidate.toJSON() });
        };
        const onState = () => this._onPcState(pc);
        pc.addEventListener('iceconnectionstatechange', onState);
        pc.addEventListener('connectionstatechange', onState);
        pc.ontrack = (e) => {
            const stream = this.remoteStream;
            if (pc !== this.pc || !stream) return;
            const track = e.track;
            if (!stream.getTracks().includes(track)) stream.addTrack(track);
            track.addEventListener('ended', () => stream.removeTrack(track));
            this.onRemoteTrack(track, stream);
        };
        this.onPeerConnection(pc);
        return pc;
    }

    /** @param {RTCPeerConnection} pc */
    async _flushCandidates(pc) {
        const queued = this._pendingCandidates;
        this._pendingCandidates = [];
        for (const c of queued) await addCandidate(pc, c);
    }

    /** @param {string} message a local failure during call setup */
    _failCall(message) {
        this.onError(message);
        if (this.state === 'calling' || this.state === 'connected') {
            this._send({ type: 'leave', name: this.peer });
            this._endCall(`error: ${message}`);
        }
    }

    /** @param {string} reason */
    _endCall(reason) {
        const wasInCall = this.state !== 'idle' && this.state !== 'signin';
        if (this.pc) {
            this.pc.onicecandidate = null;
            this.pc.ontrack = null;
            this.pc.close();
        }
        this.pc = null;
        clearTimeout(this._iceTimer);
        this._iceTimer = undefined;
        clearInterval(this._stallTimer);
        this._stallTimer = undefined;
        this._stalled = false;
        this._restartsInRow = 0;
        this._restartOfferAt = 0;
        this.mediaState = 'new';
        this.peerState = 'connected';
        if (this.remoteStream) for (const t of this.remoteStream.getTracks()) t.stop();
        this.remoteStream = null;
        this._pendingOffer = null;
        this._pendingCandidates = [];
        this._answered = false;
        this.peer = '';
        if (this.recording) {
            this.recording = false;
            this.onRecording(false);
        }
        if (!wasInCall) return;
        this.lastEndReason = reason;
        if (this.state !== 'signin') this._setState('idle');
        this.onCallEnded(reason);
    }

    /**
     * @param {any} data
     * @param {WebSocket} [ws] the socket it came on
     */
    _onMessage(data, ws) {
        let msg;
        try {
            msg = JSON.parse(data);
        } catch (e) {
            console.warn('non-JSON message from server', data);
            return;
        }
        if (!msg || typeof msg !== 'object') return;
        if (['offer', 'answer', 'accepted', 'recording'].includes(msg.type) && msg.recording === true && !this.recording) {
            this.recording = true;
            this.onRecording(true);
        }
        switch (msg.type) {
        case 'login': return this._onLoginReply(msg);
        case 'resume': return ws && this._onResumeReply(msg, ws);
        case 'pong': return;
        case 'recording': return; // handled above
        case 'callstate': return this._onCallState(String(msg.name || ''), msg.state);
        case 'users': {
            const list = Array.isArray(msg.users) ? msg.users : [];
            return this.onUsers(list, typeof msg.total === 'number' ? msg.total : list.length);
        }
        case 'offer': return this._onOffer(msg.name || '', msg.offer);
        case 'answer': return this._onAnswer(msg.answer);
        case 'candidate': return this._onCandidate(msg.candidate);
        case 'accepted': return this._onAccepted(msg.name || this.peer);
        case 'leave': return this._onLeave(msg.reason || 'hangup');
        case 'error': return this._onError(String(msg.message || 'Unknown error'));
        default: console.warn('unknown message type', msg.type);
        }
    }

    /** @param {any} msg */
    _onLoginReply(msg) {
        const result = { success: !!msg.success, message: msg.message || '' };
        if (result.success) {
            this.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
            this.name = this._loginName;
            this.session = typeof msg.session === 'string' ? msg.session : '';
            this._setState('idle');
            this._startHeartbeat();
        }
        if (this._loginResolve) {
            const resolve = this._loginResolve;
            this._loginResolve = null;
            resolve(result);
        }
        this.onLogin(result.success, result.message);
    }

    /**
     * An offer from the server: a new incoming call, or renegotiation.
     * @param {string} name
     * @param {RTCSessionDescriptionInit} offer
     */
    _onOffer(name, offer) {
        if (!offer || typeof offer.sdp !== 'string') return;
        offer = { type: 'offer', sdp: offer.sdp };
        if (this.state === 'idle') {
            this.peer = name;
            this._pendingOffer = offer;
            this._pendingCandidates = [];
            this._setState('incoming');
            this.onIncomingCall(name);
            return;
        }
        if (this.state === 'incoming') {
            this._pendingOffer = offer; // re-offer before we picked up
            return;
        }
        const pc = this.pc;
        if (!pc || (this.state !== 'calling' && this.state !== 'connected')) return;
        this._enqueue(async () => {
            if (pc !== this.pc) return;
            // Glare: our offer is pending, the server yields and answers ours.
            if (pc.signalingState === 'have-local-offer') return;
            await pc.setRemoteDescription(offer);
            await this._flushCandidates(pc);
            const answer = await pc.createAnswer();
            if (pc !== this.pc) return;
            await pc.setLocalDescription(answer);
            if (pc !== this.pc) return;
            this._send({ type: 'answer', name: this.peer, answer: descJSON(pc.localDescription) });
        }, pc);
    }

    /** @param {RTCSessionDescriptionInit} answer */
    _onAnswer(answer) {
        const pc = this.pc;
        if (!pc || !answer || typeof answer.sdp !== 'string') return;
        this._answered = true;
        this._enqueue(async () => {
            if (pc !== this.pc || pc.signalingState !== 'have-local-offer') return;
            await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
            if (this._restartOfferAt) this._log('ICE restart answered');
            this._restartOfferAt = 0;
            await this._flushCandidates(pc);
        }, pc);
    }

    /** @param {RTCIceCandidateInit|null} candidate */
    _onCandidate(candidate) {
        if (!candidate || this.state === 'idle' || this.state === 'signin') return;
        const pc = this.pc;
        this._enqueue(async () => {
            if (!pc || pc !== this.pc || !pc.remoteDescription) {
                if (this.state !== 'idle' && this.state !== 'signin') this._pendingCandidates.push(candidate);
                return;
            }
            await addCandidate(pc, candidate);
        });
    }

    /** @param {string} name */
    _onAccepted(name) {
        if (this.state !== 'calling') return;
        this._setState('connected');
        this.onAccepted(name);
    }

    /** @param {string} reason */
    _onLeave(reason) {
        this._endCall(reason);
    }

    /**
     * @param {string} name
     * @param {any} state
     */
    _onCallState(name, state) {
        if (!name || name !== this.peer || (state !== 'reconnecting' && state !== 'connected')) return;
        this._log(`${name} ${state}`);
        if (this.peerState === state) return;
        this.peerState = state;
        this.onConnectionChange();
    }

    /** @param {string} message */
    _onError(message) {
        // A server without the heartbeat (older version) rejects ping.
        if (message === 'Command not found: ping') return;
        if (this._resuming) {
            this._onResumeReply({ success: false, message }, /** @type {WebSocket} */ (this.socket));
            return;
        }
        if (this.state === 'signin' && this._loginResolve) {
            const resolve = this._loginResolve;
            this._loginResolve = null;
            resolve({ success: false, message });
            this.onLogin(false, message);
            return;
        }
        this.onError(message);
        // A call that the server refused (user offline, busy, ...).
        if (this.state === 'calling' && !this._answered) this._endCall(message);
    }
}

/** @type {WeakSet<RTCIceTransport>} */
const watchedTransports = new WeakSet();

/**
 * @param {RTCPeerConnection} pc
 * @returns {boolean} ICE is connected
 */
function iceUp(pc) {
    return pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
}

/**
 * @param {RTCSessionDescription|null} d
 * @returns {{type: string, sdp: string}}
 */
function descJSON(d) {
    if (!d) throw new Error('no local description');
    return { type: d.type, sdp: d.sdp };
}

/**
 * Adds a server candidate; a bad one is logged, not fatal. An empty one
 * (end of candidates) is skipped.
 * @param {RTCPeerConnection} pc
 * @param {RTCIceCandidateInit} c
 */
async function addCandidate(pc, c) {
    if (!c.candidate) return;
    try {
        await pc.addIceCandidate(c);
    } catch (e) {
        console.warn('addIceCandidate failed', e);
    }
}
