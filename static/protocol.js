// @ts-check
// Protocol module: the WebSocket signaling and the one RTCPeerConnection to
// the server (an SFU). No DOM access; the UI (app.js) listens to callbacks.
// The class keeps the call state machine and the message dispatch; the
// WebSocket lives in session.js, the RTCPeerConnection in peer.js, getStats
// summaries in stats.js (session.js and peer.js methods sit on the base class).
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

import { sessionMethods } from './session.js';
import { peerMethods, descJSON, addCandidate } from './peer.js';

/**
 * The methods of session.js and peer.js, installed on the prototype of
 * VideoChatClient's base class (typed for @ts-check).
 */
const Base = /** @type {new () => typeof sessionMethods & typeof peerMethods} */ (/** @type {unknown} */ (class {}));
Object.assign(Base.prototype, sessionMethods, peerMethods);

/** A client of the video chat server: one WebSocket, at most one call. */
export class VideoChatClient extends Base {
    /** @param {ClientOptions} options */
    constructor(options) {
        super();
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
        /**
         * The call ended: reason is the leave reason (or a local one); peer
         * the other participant, was the state it ended in, local that we
         * ended it (hang up, decline).
         * @type {(reason: string, info: {peer: string, was: CallState, local: boolean}) => void}
         */
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
        /** our microphone/camera state, told to the other side (mute) */
        this.localMute = { muted: false, cameraOff: false };
        /** the other participant's microphone/camera state, from mute */
        this.peerMute = { muted: false, cameraOff: false };
        /** @type {(state: {muted: boolean, cameraOff: boolean}) => void} peerMute changed */
        this.onPeerMute = () => {};
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
     * @param {MediaStream|null} localStream our media; null (or a stream
     *   without video or audio) calls receive-only for what is missing
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
        addLocal(pc, localStream);
        // What we do not send we still want to receive.
        for (const kind of ['audio', 'video']) {
            if (!localStream || localStream.getTracks().every((t) => t.kind !== kind)) {
                pc.addTransceiver(kind, { direction: 'recvonly' });
            }
        }
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
     * @param {MediaStream|null} localStream our media; null answers
     *   receive-only (no camera or microphone, or no permission)
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
            addLocal(pc, localStream);
            await this._flushCandidates(pc);
            const answer = await pc.createAnswer();
            if (pc !== this.pc) return;
            await pc.setLocalDescription(answer);
            if (pc !== this.pc) return;
            this._send({ type: 'answer', name, answer: descJSON(pc.localDescription) });
            this._sendMute();
        }, pc);
    }

    /** Declines the ringing call. */
    decline() {
        if (this.state !== 'incoming') return;
        this._send({ type: 'leave', name: this.peer });
        this._endCall('declined', true);
    }

    /** Hangs up (or cancels an outgoing call). */
    hangUp() {
        if (this.state === 'incoming') return this.decline();
        if (this.state !== 'calling' && this.state !== 'connected') return;
        this._send({ type: 'leave', name: this.peer });
        this._endCall('hangup', true);
    }

    /**
     * Tells the other participant (and keeps for the next call) whether our
     * microphone is muted and our camera off (the additive mute message).
     * @param {{muted?: boolean, cameraOff?: boolean}} state
     */
    setMute(state) {
        this.localMute = { ...this.localMute, ...state };
        this._sendMute();
    }

    /**
     * Sends our media on a new track of the same kind (another camera or
     * microphone) without renegotiation: RTCRtpSender.replaceTrack.
     * @param {MediaStreamTrack} track
     * @returns {Promise<boolean>} false when the call sends no such kind
     */
    async replaceTrack(track) {
        const pc = this.pc;
        if (!pc) return false;
        const sender = pc.getSenders().find((s) => s.track && s.track.kind === track.kind);
        if (!sender) return false;
        await sender.replaceTrack(track);
        return true;
    }

    // ---- internals ----

    _sendMute() {
        if (this.state !== 'connected') return;
        this._send({ type: 'mute', name: this.peer, muted: this.localMute.muted, cameraOff: this.localMute.cameraOff });
    }

    /**
     * @param {string} name
     * @param {any} msg
     */
    _onMute(name, msg) {
        if (!name || name !== this.peer) return;
        this.peerMute = { muted: msg.muted === true, cameraOff: msg.cameraOff === true };
        this.onPeerMute(this.peerMute);
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

    /** @param {CallState} state */
    _setState(state) {
        if (this.state === state) return;
        this.state = state;
        this.onStateChange(state);
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
    /**
     * @param {string} reason
     * @param {boolean} [local] we ended it (hang up, decline)
     */
    _endCall(reason, local = false) {
        const peer = this.peer, was = this.state;
        const wasInCall = this.state !== 'idle' && this.state !== 'signin';
        if (this.pc) {
            this.pc.onicecandidate = null;
            this.pc.ontrack = null;
            this.pc.close();
        }
        this.pc = null;
        // A step in flight on the closed PeerConnection may never settle
        // (the WebRTC spec leaves operations queued on a closed connection
        // pending): the next call gets a fresh queue rather than wait
        // behind it forever.
        this._queue = Promise.resolve();
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
        if (this.peerMute.muted || this.peerMute.cameraOff) {
            this.peerMute = { muted: false, cameraOff: false };
            this.onPeerMute(this.peerMute);
        }
        if (this.recording) {
            this.recording = false;
            this.onRecording(false);
        }
        if (!wasInCall) return;
        this.lastEndReason = reason;
        if (this.state !== 'signin') this._setState('idle');
        this.onCallEnded(reason, { peer, was, local });
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
        case 'mute': return this._onMute(String(msg.name || ''), msg);
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
        this._sendMute();
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

/**
 * Adds our tracks (if any) to the PeerConnection.
 * @param {RTCPeerConnection} pc
 * @param {MediaStream|null} stream
 */
function addLocal(pc, stream) {
    if (stream) for (const t of stream.getTracks()) pc.addTrack(t, stream);
}
