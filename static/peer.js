// @ts-check
// Call module: the one RTCPeerConnection of a VideoChatClient's call (the
// server is an SFU): creating it, serialising its asynchronous steps, ICE
// restart and stall detection. No DOM. The methods are installed on
// VideoChatClient's prototype (protocol.js), whose state they share.

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

/** @satisfies {ThisType<import('./protocol.js').VideoChatClient>} */
export const peerMethods = {
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
    },

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
    },

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
    },

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
    },

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
    },

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
    },

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
    },

    /** @param {RTCPeerConnection} pc */
    async _flushCandidates(pc) {
        const queued = this._pendingCandidates;
        this._pendingCandidates = [];
        for (const c of queued) await addCandidate(pc, c);
    },

};

/** @type {WeakSet<RTCIceTransport>} */
const watchedTransports = new WeakSet();

/**
 * @param {RTCPeerConnection} pc
 * @returns {boolean} ICE is connected
 */
export function iceUp(pc) {
    return pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
}

/**
 * @param {RTCSessionDescription|null} d
 * @returns {{type: string, sdp: string}}
 */
export function descJSON(d) {
    if (!d) throw new Error('no local description');
    return { type: d.type, sdp: d.sdp };
}

/**
 * Adds a server candidate; a bad one is logged, not fatal. An empty one
 * (end of candidates) is skipped.
 * @param {RTCPeerConnection} pc
 * @param {RTCIceCandidateInit} c
 */
export async function addCandidate(pc, c) {
    if (!c.candidate) return;
    try {
        await pc.addIceCandidate(c);
    } catch (e) {
        console.warn('addIceCandidate failed', e);
    }
}
