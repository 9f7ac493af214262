// @ts-check
// Session module: the signaling WebSocket of a VideoChatClient, its
// heartbeat, loss detection, reconnection and session resume (PROTOCOL.md,
// Session resume). No DOM. The methods are installed on VideoChatClient's
// prototype (protocol.js), whose state they share; nothing else calls them.
import { iceUp } from './peer.js';

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

/** @satisfies {ThisType<import('./protocol.js').VideoChatClient>} */
export const sessionMethods = {
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
    },


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
    },

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
    },

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
    },

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
    },

    // ---- the WebSocket: heartbeat, loss, resume ----

    /** @returns {WebSocket} a new socket, now this.socket */
    _openSocket() {
        const ws = new WebSocket(this.options.url);
        this.socket = ws;
        ws.onmessage = (e) => this._onFrame(ws, e.data);
        ws.onclose = () => this._onSocketClose(ws);
        return ws;
    },

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
    },

    _closeAbandoned() {
        for (const ws of this._abandoned) {
            ws.onmessage = null;
            ws.close();
        }
        this._abandoned = [];
    },

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
    },

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
    },

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
    },

    _scheduleReconnect() {
        clearTimeout(this._reconnectTimer);
        if (this._signedOut || !this._lostAt) return;
        const i = Math.min(this._reconnectIndex || 0, RECONNECT_DELAYS.length - 1);
        this._reconnectIndex = (this._reconnectIndex || 0) + 1;
        // An attempt that timed out has waited already: the backoff counts
        // from its start (a black hole is retried every CONNECT_TIMEOUT).
        const waited = this._attemptAt ? performance.now() - this._attemptAt : 0;
        this._reconnectTimer = setTimeout(() => this._reconnect(), Math.max(0, RECONNECT_DELAYS[i] - waited));
    },

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
    },

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
    },

    _startHeartbeat() {
        this._stopHeartbeat();
        this._awaitingSince = 0;
        this._lastPing = performance.now();
        this._pingTimer = setInterval(() => this._heartbeat(), 1000);
    },

    _stopHeartbeat() {
        clearInterval(this._pingTimer);
        this._pingTimer = undefined;
    },

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
    },

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
    },

};
