// @ts-check
// Ringer: makes an incoming call noticed. A ringtone generated with Web
// Audio (no sound file), a browser notification while the tab is hidden,
// and the tab title flashing. UI-side; knows nothing of the protocol.

/** Ring cadence: two 0.4 s bursts of 440+480 Hz, then silence, every 3 s. */
const CADENCE_MS = 3000;
const BURSTS = [[0, 0.4], [0.6, 1.0]];

export class Ringer {
    constructor() {
        /** @type {AudioContext|null} */
        this.ctx = null;
        /** @type {number|undefined} */
        this._ringTimer = undefined;
        /** @type {number|undefined} */
        this._titleTimer = undefined;
        /** @type {Notification|null} */
        this._notification = null;
        this._title = document.title;
        this.ringing = false;
        /** @type {() => void} the notification was clicked */
        this.onNotificationClick = () => {};
    }

    /**
     * Creates (or resumes) the audio context. Call it from a user gesture
     * (sign-in) so that browsers let it play later.
     */
    unlock() {
        const AC = window.AudioContext || /** @type {any} */ (window).webkitAudioContext;
        if (!AC) return;
        if (!this.ctx) this.ctx = new AC();
        if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    }

    /** @returns {string} the audio context's state ('none' without one) */
    get audioState() { return this.ctx ? this.ctx.state : 'none'; }

    /** @param {string} name who calls */
    start(name) {
        if (this.ringing) return;
        this.ringing = true;
        this.unlock();
        this._ring();
        this._ringTimer = window.setInterval(() => this._ring(), CADENCE_MS);
        this._title = document.title;
        let on = false;
        this._titleTimer = window.setInterval(() => {
            on = !on;
            document.title = on ? `Call from ${name}` : this._title;
        }, 1000);
        document.title = `Call from ${name}`;
        this._notify(name);
    }

    stop() {
        if (!this.ringing) return;
        this.ringing = false;
        clearInterval(this._ringTimer);
        clearInterval(this._titleTimer);
        document.title = this._title;
        if (this._notification) this._notification.close();
        this._notification = null;
    }

    /** One cadence of the ringtone. */
    _ring() {
        const ctx = this.ctx;
        if (!ctx) return;
        if (ctx.state === 'suspended') ctx.resume().catch(() => {});
        const t0 = ctx.currentTime + 0.05;
        const gain = ctx.createGain();
        gain.gain.value = 0;
        gain.connect(ctx.destination);
        for (const [a, b] of BURSTS) {
            gain.gain.setValueAtTime(0, t0 + a);
            gain.gain.linearRampToValueAtTime(0.12, t0 + a + 0.02);
            gain.gain.setValueAtTime(0.12, t0 + b - 0.02);
            gain.gain.linearRampToValueAtTime(0, t0 + b);
        }
        for (const f of [440, 480]) {
            const osc = ctx.createOscillator();
            osc.frequency.value = f;
            osc.connect(gain);
            osc.start(t0);
            osc.stop(t0 + BURSTS[BURSTS.length - 1][1] + 0.05);
            osc.onended = () => osc.disconnect();
        }
        window.setTimeout(() => gain.disconnect(), (BURSTS[BURSTS.length - 1][1] + 0.3) * 1000);
    }

    /** @param {string} name */
    _notify(name) {
        const N = window.Notification;
        if (!N || N.permission !== 'granted' || document.visibilityState !== 'hidden') return;
        try {
            const n = new N(`${name} is calling`, {
                body: 'Open the video chat tab to accept or decline.',
                tag: 'videochat-call',
                requireInteraction: true,
            });
            n.onclick = () => {
                window.focus();
                n.close();
                this.onNotificationClick();
            };
            this._notification = n;
        } catch (e) {
            console.warn('notification', e);
        }
    }
}

/**
 * Whether to offer turning notifications on (the browser has them and the
 * person has not decided yet).
 * @returns {boolean}
 */
export function canAskNotifications() {
    return !!window.Notification && window.Notification.permission === 'default';
}
