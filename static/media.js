// @ts-check
// Media module: opens the camera and microphone for a call, falling back to
// sound only (no camera, or the camera busy) and to receive-only (no
// permission, no devices, an insecure page), with a sentence that says what
// happened and what to do. No DOM.

/**
 * @typedef {Object} LocalMedia
 * @property {MediaStream|null} stream - null: receive-only
 * @property {'full'|'audio'|'video'|'none'} mode - what we send
 * @property {string} note - for the person ('' when all went well)
 *
 * @typedef {Object} DevicePrefs
 * @property {string} [cameraId]
 * @property {string} [micId]
 */

export const BLOCKED = 'Camera and microphone are blocked for this site, so you take part without them: ' +
    'you still see and hear the other side. To allow them, click the camera icon (or the lock icon) ' +
    'at the left of the address bar, choose Allow, and start the call again.';
export const INSECURE = 'This page is not served over https, so the browser offers no camera or microphone: ' +
    'you still see and hear the other side. Open the https address to be seen and heard.';

/**
 * @param {DevicePrefs} prefs
 * @returns {Promise<LocalMedia>}
 */
export async function openMedia(prefs) {
    const md = navigator.mediaDevices;
    if (!md || typeof md.getUserMedia !== 'function') return { stream: null, mode: 'none', note: INSECURE };
    /** @type {MediaTrackConstraints|boolean} */
    const audio = prefs.micId ? { deviceId: prefs.micId } : true;
    /** @type {MediaTrackConstraints|boolean} */
    const video = prefs.cameraId ? { deviceId: prefs.cameraId } : true;
    let first;
    try {
        return { stream: await md.getUserMedia({ audio, video }), mode: 'full', note: '' };
    } catch (e) {
        first = /** @type {DOMException} */ (e);
    }
    if (first.name === 'NotAllowedError' || first.name === 'SecurityError') {
        return { stream: null, mode: 'none', note: BLOCKED };
    }
    try {
        const stream = await md.getUserMedia({ audio });
        const note = first.name === 'NotReadableError'
            ? 'Your camera is in use by another app, so you take part with sound only.'
            : 'No camera found, so you take part with sound only.';
        return { stream, mode: 'audio', note };
    } catch (e) {
        if (/** @type {DOMException} */ (e).name === 'NotAllowedError') return { stream: null, mode: 'none', note: BLOCKED };
    }
    try {
        const stream = await md.getUserMedia({ video });
        return { stream, mode: 'video', note: 'No microphone found: the other side sees you but cannot hear you.' };
    } catch {
        return {
            stream: null, mode: 'none',
            note: 'No camera or microphone could be opened: you still see and hear the other side. ' +
                'Check that one is plugged in and not used by another app.',
        };
    }
}

/**
 * Opens one device of a kind (for switching mid-call or a preview).
 * @param {'audio'|'video'} kind
 * @param {string} deviceId
 * @returns {Promise<MediaStreamTrack>}
 */
export async function openTrack(kind, deviceId) {
    const c = deviceId ? { deviceId: { exact: deviceId } } : true;
    const s = await navigator.mediaDevices.getUserMedia(kind === 'audio' ? { audio: c } : { video: c });
    return kind === 'audio' ? s.getAudioTracks()[0] : s.getVideoTracks()[0];
}

/**
 * @returns {Promise<{cameras: MediaDeviceInfo[], mics: MediaDeviceInfo[], speakers: MediaDeviceInfo[]}>}
 */
export async function listDevices() {
    const md = navigator.mediaDevices;
    const all = md && md.enumerateDevices ? await md.enumerateDevices() : [];
    return {
        cameras: all.filter((d) => d.kind === 'videoinput'),
        mics: all.filter((d) => d.kind === 'audioinput'),
        speakers: all.filter((d) => d.kind === 'audiooutput'),
    };
}

/** @param {MediaStream|null} stream */
export function stopStream(stream) {
    if (stream) for (const t of stream.getTracks()) t.stop();
}
