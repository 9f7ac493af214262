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
 */

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
        /** @type {() => void} the WebSocket closed; the client is back in 'signin' */
        this.onClose = () => {};
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
        return new Promise((resolve, reject) => {
            const ws = new WebSocket(this.options.url);
            this.socket = ws;
            let opened = false;
            ws.onopen = () => { opened = true; resolve(); };
            ws.onmessage = (e) => this._onMessage(e.data);
            ws.onclose = () => {
                if (this.socket !== ws) return;
                this.socket = null;
                if (!opened) reject(new Error('Cannot connect to server'));
                this._onSocketClosed();
            };
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

    /** Closes the WebSocket (the server logs us out and ends any call). */
    close() {
        if (this.socket) this.socket.close();
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

    /** @param {object} msg */
    _send(msg) {
        if (this.socket && this.socket.readyState === WebSocket.OPEN) {
            this.socket.send(JSON.stringify(msg));
        }
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

    _onSocketClosed() {
        const inCall = this.state !== 'idle' && this.state !== 'signin';
        if (inCall) this._endCall('disconnected');
        this.name = '';
        this._setState('signin');
        if (this._loginResolve) {
            this._loginResolve({ success: false, message: 'Disconnected from server' });
            this._loginResolve = null;
        }
        this.onClose();
    }

    /** @param {any} data */
    _onMessage(data) {
        let msg;
        try {
            msg = JSON.parse(data);
        } catch (e) {
            console.warn('non-JSON message from server', data);
            return;
        }
        if (!msg || typeof msg !== 'object') return;
        if (['offer', 'answer', 'accepted'].includes(msg.type) && msg.recording === true && !this.recording) {
            this.recording = true;
            this.onRecording(true);
        }
        switch (msg.type) {
        case 'login': return this._onLoginReply(msg);
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
            this._setState('idle');
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

    /** @param {string} message */
    _onError(message) {
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
