// @ts-check
// Stats module: turns RTCPeerConnection.getStats() into the numbers a person
// can read (bitrates, round-trip time, loss, jitter, resolution, frame rate,
// the network path in words) and a good/fair/poor verdict. No DOM.

/**
 * @typedef {Object} Quality
 * @property {number} inKbps - received, kbit/s (all media)
 * @property {number} outKbps - sent, kbit/s (all media)
 * @property {number} rttMs - round-trip time to the server, ms (0: unknown yet)
 * @property {number} lossPct - received packets lost since the last sample, %
 * @property {number} jitterMs - received audio jitter (video if no audio), ms
 * @property {number} width - received video resolution
 * @property {number} height
 * @property {number} fps - received frames per second
 * @property {number} framesDecoded
 * @property {string} path - "direct UDP", "relayed over TCP", … ('' before ICE connects)
 * @property {'good'|'fair'|'poor'|'unknown'} level
 */

/** Thresholds of the verdict (loss %, RTT ms): at or above is worse. */
const FAIR = { loss: 2, rtt: 250 };
const POOR = { loss: 8, rtt: 600 };

/** Samples one PeerConnection; each sample compares with the previous one. */
export class StatsSampler {
    /** @param {RTCPeerConnection} pc */
    constructor(pc) {
        this.pc = pc;
        /** @type {{t: number, bytesIn: number, bytesOut: number, lost: number, recv: number}|null} */
        this.prev = null;
    }

    /** @returns {Promise<Quality>} */
    async sample() {
        const report = await this.pc.getStats();
        const now = performance.now();
        /** @type {Map<string, any>} */
        const byId = new Map();
        report.forEach((r) => byId.set(r.id, r));
        let bytesIn = 0, bytesOut = 0, lost = 0, recv = 0, rttMs = 0, remoteRtt = 0;
        let audioJitter = -1, videoJitter = -1, width = 0, height = 0, fps = 0, framesDecoded = 0;
        let path = '';
        for (const r of byId.values()) {
            if (r.type === 'inbound-rtp') {
                bytesIn += r.bytesReceived || 0;
                lost += Math.max(0, r.packetsLost || 0);
                recv += r.packetsReceived || 0;
                if (r.kind === 'audio') audioJitter = (r.jitter || 0) * 1000;
                if (r.kind === 'video') {
                    videoJitter = (r.jitter || 0) * 1000;
                    width = r.frameWidth || 0;
                    height = r.frameHeight || 0;
                    fps = r.framesPerSecond || 0;
                    framesDecoded = r.framesDecoded || 0;
                }
            } else if (r.type === 'outbound-rtp') {
                bytesOut += r.bytesSent || 0;
            } else if (r.type === 'remote-inbound-rtp' && r.roundTripTime) {
                remoteRtt = r.roundTripTime * 1000;
            } else if (r.type === 'transport' && r.selectedCandidatePairId) {
                const pair = byId.get(r.selectedCandidatePairId);
                if (pair) {
                    if (pair.currentRoundTripTime) rttMs = pair.currentRoundTripTime * 1000;
                    path = describePath(byId.get(pair.localCandidateId));
                }
            }
        }
        if (!rttMs) rttMs = remoteRtt;
        const prev = this.prev;
        this.prev = { t: now, bytesIn, bytesOut, lost, recv };
        let inKbps = 0, outKbps = 0, lossPct = 0;
        if (prev && now > prev.t) {
            const ms = now - prev.t;
            inKbps = Math.max(0, (bytesIn - prev.bytesIn) * 8 / ms);
            outKbps = Math.max(0, (bytesOut - prev.bytesOut) * 8 / ms);
            const dl = lost - prev.lost, dr = recv - prev.recv;
            lossPct = dl > 0 && dl + dr > 0 ? 100 * dl / (dl + dr) : 0;
        }
        const jitterMs = audioJitter >= 0 ? audioJitter : Math.max(0, videoJitter);
        return {
            inKbps, outKbps, rttMs, lossPct, jitterMs, width, height, fps, framesDecoded, path,
            level: verdict(prev !== null && path !== '', lossPct, rttMs),
        };
    }
}

/**
 * @param {boolean} known
 * @param {number} lossPct
 * @param {number} rttMs
 * @returns {Quality['level']}
 */
export function verdict(known, lossPct, rttMs) {
    if (!known) return 'unknown';
    if (lossPct >= POOR.loss || rttMs >= POOR.rtt) return 'poor';
    if (lossPct >= FAIR.loss || rttMs >= FAIR.rtt) return 'fair';
    return 'good';
}

/**
 * The network path of our selected local candidate, in words.
 * @param {any} local an RTCIceCandidateStats
 * @returns {string}
 */
export function describePath(local) {
    if (!local) return '';
    if (local.candidateType === 'relay') {
        const via = String(local.relayProtocol || 'udp').toUpperCase();
        return `relayed over ${via}`;
    }
    return `direct ${String(local.protocol || 'udp').toUpperCase()}`;
}
