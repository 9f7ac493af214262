// @ts-check
// Device picker (UI): a dialog to choose the camera, microphone and (where
// the browser can) speaker, with a preview and a microphone level meter.
// Outside a call it opens its own preview (the person asked for it) and
// closes it with the dialog; during a call it shows the call's own stream
// and switches devices through the app (replaceTrack, no renegotiation).
import { listDevices, openTrack, BLOCKED } from './media.js';

/**
 * @typedef {Object} PickerHooks
 * @property {() => MediaStream|null} callStream - the call's media, or null outside a call
 * @property {(kind: 'audio'|'video', deviceId: string) => Promise<void>} switchDevice - during a call
 * @property {(deviceId: string) => Promise<void>} setSpeaker
 * @property {{cameraId?: string, micId?: string, speakerId?: string}} prefs - kept up to date
 * @property {() => void} onClose
 */

/** @param {string} id @returns {any} */
const $ = (id) => document.getElementById(id);

export class DevicePicker {
    /** @param {PickerHooks} hooks */
    constructor(hooks) {
        this.hooks = hooks;
        /** @type {HTMLDialogElement} */
        this.dialog = $('devices');
        /** @type {HTMLSelectElement} */
        this.cameraSelect = $('camera-select');
        /** @type {HTMLSelectElement} */
        this.micSelect = $('mic-select');
        /** @type {HTMLSelectElement} */
        this.speakerSelect = $('speaker-select');
        /** @type {HTMLVideoElement} */
        this.preview = $('preview-video');
        this.meter = $('mic-meter');
        this.level = $('mic-level');
        this.note = $('devices-note');
        /** @type {MediaStream|null} our own preview (outside a call) */
        this.own = null;
        /** @type {AudioContext|null} */
        this.ctx = null;
        /** @type {number|undefined} */
        this.meterTimer = undefined;
        this.cameraSelect.addEventListener('change', () => this._change('video', this.cameraSelect.value));
        this.micSelect.addEventListener('change', () => this._change('audio', this.micSelect.value));
        this.speakerSelect.addEventListener('change', () => {
            this.hooks.prefs.speakerId = this.speakerSelect.value;
            this.hooks.setSpeaker(this.speakerSelect.value).catch((e) => { this.note.textContent = `Cannot use that speaker: ${e.message}`; });
        });
        this.dialog.addEventListener('close', () => this._closed());
    }

    get isOpen() { return this.dialog.open; }

    async open() {
        if (this.dialog.open) return;
        this.note.textContent = '';
        this.dialog.showModal();
        await this._startPreview();
        await this._fill();
    }

    close() {
        if (this.dialog.open) this.dialog.close();
    }

    /** The call started or ended while the dialog is open: follow it. */
    async refresh() {
        if (!this.dialog.open) return;
        this._stopOwn();
        await this._startPreview();
    }

    async _fill() {
        let d;
        try {
            d = await listDevices();
        } catch (e) {
            this.note.textContent = 'The browser did not list its devices.';
            return;
        }
        const stream = this.preview.srcObject instanceof MediaStream ? this.preview.srcObject : null;
        /** @param {MediaStreamTrack[]} tracks */
        const inUse = (tracks) => (tracks[0] && tracks[0].getSettings().deviceId) || '';
        fillSelect(this.cameraSelect, d.cameras, 'Camera', inUse(stream ? stream.getVideoTracks() : []) || this.hooks.prefs.cameraId || '');
        fillSelect(this.micSelect, d.mics, 'Microphone', inUse(stream ? stream.getAudioTracks() : []) || this.hooks.prefs.micId || '');
        const canSink = 'setSinkId' in HTMLMediaElement.prototype && d.speakers.length > 0;
        this.speakerSelect.hidden = !canSink;
        $('speaker-label').hidden = !canSink;
        if (canSink) fillSelect(this.speakerSelect, d.speakers, 'Speaker', this.hooks.prefs.speakerId || '');
        if (!d.cameras.length && !d.mics.length) this.note.textContent = 'No camera or microphone found.';
    }

    async _startPreview() {
        const call = this.hooks.callStream();
        if (call) {
            this._show(call);
            return;
        }
        const prefs = this.hooks.prefs;
        const own = new MediaStream();
        this.own = own;
        for (const kind of /** @type {const} */ (['video', 'audio'])) {
            try {
                const t = await openTrack(kind, (kind === 'video' ? prefs.cameraId : prefs.micId) || '');
                if (this.own !== own || !this.dialog.open) { t.stop(); return; }
                own.addTrack(t);
            } catch (e) {
                const name = /** @type {DOMException} */ (e).name;
                if (name === 'NotAllowedError') this.note.textContent = BLOCKED;
                else if (!this.note.textContent) this.note.textContent = `No ${kind === 'video' ? 'camera' : 'microphone'} could be opened.`;
            }
        }
        this._show(own);
    }

    /** @param {MediaStream} stream */
    _show(stream) {
        this.preview.srcObject = stream;
        this.preview.play().catch(() => {});
        this._meter(stream);
    }

    /**
     * @param {'audio'|'video'} kind
     * @param {string} deviceId
     */
    async _change(kind, deviceId) {
        const prefs = this.hooks.prefs;
        if (kind === 'video') prefs.cameraId = deviceId; else prefs.micId = deviceId;
        this.note.textContent = '';
        try {
            if (this.hooks.callStream()) {
                await this.hooks.switchDevice(kind, deviceId);
                const s = this.hooks.callStream();
                if (s) this._show(s);
                return;
            }
            const own = this.own;
            if (!own) return;
            // At most one camera live: stop the old one before opening the new.
            for (const t of own.getTracks()) if (t.kind === kind) { t.stop(); own.removeTrack(t); }
            own.addTrack(await openTrack(kind, deviceId));
            this._show(own);
        } catch (e) {
            this.note.textContent = `Cannot open that ${kind === 'video' ? 'camera' : 'microphone'}: ${/** @type {Error} */ (e).message}`;
        }
    }

    /** @param {MediaStream} stream */
    _meter(stream) {
        this._stopMeter();
        const track = stream.getAudioTracks()[0];
        const AC = window.AudioContext;
        if (!track || !AC) return;
        if (!this.ctx) this.ctx = new AC();
        const ctx = this.ctx;
        ctx.resume().catch(() => {});
        const src = ctx.createMediaStreamSource(new MediaStream([track]));
        const an = ctx.createAnalyser();
        an.fftSize = 512;
        src.connect(an);
        const buf = new Float32Array(an.fftSize);
        // A timer, not requestAnimationFrame: it keeps going in a hidden tab.
        this.meterTimer = window.setInterval(() => {
            an.getFloatTimeDomainData(buf);
            let sum = 0;
            for (const v of buf) sum += v * v;
            const rms = Math.sqrt(sum / buf.length);
            const pct = Math.min(100, Math.round(rms * 300));
            this.level.style.width = `${pct}%`;
            this.meter.setAttribute('aria-valuenow', String(pct));
        }, 100);
        this._meterNodes = [src, an];
    }

    _stopMeter() {
        clearInterval(this.meterTimer);
        this.meterTimer = undefined;
        for (const n of this._meterNodes || []) n.disconnect();
        this._meterNodes = [];
    }

    _stopOwn() {
        if (this.own) for (const t of this.own.getTracks()) t.stop();
        this.own = null;
    }

    _closed() {
        this._stopMeter();
        this._stopOwn();
        this.preview.srcObject = null;
        if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
        this.hooks.onClose();
    }
}

/**
 * @param {HTMLSelectElement} sel
 * @param {MediaDeviceInfo[]} list
 * @param {string} what
 * @param {string} current
 */
function fillSelect(sel, list, what, current) {
    sel.replaceChildren();
    list.forEach((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${what} ${i + 1}`;
        if (d.deviceId === current) o.selected = true;
        sel.append(o);
    });
    sel.disabled = list.length === 0;
}
