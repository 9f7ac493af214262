// @ts-check
// Connectivity test: which transports reach the server from this browser.
// Each test opens its own connection and measures round trips; results
// land in the page and in window.diag (for tests).

const TIMEOUT_MS = 8000; // a transport silent this long counts as blocked
const GATHER_MS = 5000; // a TURN server that has not answered by then counts as blocked
const SLOW_MS = 300; // a round trip above this is called slow
const PINGS = 5;

/** @typedef {{result: string, rtt: number|null, text: string, detail?: string}} Result */

/** @type {{[name: string]: {title: string, run: (ice: any[]) => Promise<Result>}}} */
const tests = {
  websocket: {title: 'WebSocket (signaling)', run: testWebSocket},
  udp: {title: 'UDP to the media server', run: ice => testPeer('udp', [], 'all', ice)},
  icetcp: {title: 'TCP to the media server (ICE-TCP)', run: ice => testPeer('tcp', [], 'all', ice)},
  'turn-udp': {title: 'TURN relay over UDP', run: ice => testPeer('udp', pick(ice, u => u.startsWith('turn:') && u.endsWith('transport=udp')), 'relay', ice)},
  'turn-tcp': {title: 'TURN relay over TCP', run: ice => testPeer('udp', pick(ice, u => u.startsWith('turn:') && u.endsWith('transport=tcp')), 'relay', ice)},
  'turn-tls': {title: 'TURN relay over TLS', run: ice => testPeer('udp', pick(ice, u => u.startsWith('turns:')), 'relay', ice)},
};

/** Why the server handed out no TURN servers, if it said. */
let noTurnReason = '';

/** @type {{done: boolean, results: {[name: string]: Result}}} */
const diag = {done: false, results: {}};
// @ts-ignore
window.diag = diag;

/** The iceServers entries that have URLs matching keep, with only those URLs. */
function pick(/** @type {any[]} */ ice, /** @type {(u: string) => boolean} */ keep) {
  const out = [];
  for (const s of ice) {
    const urls = (Array.isArray(s.urls) ? s.urls : [s.urls]).filter(keep);
    if (urls.length) out.push({...s, urls});
  }
  return out;
}

const median = (/** @type {number[]} */ xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function verdict(/** @type {number[]} */ rtts) {
  const rtt = Math.round(median(rtts));
  const slow = rtt > SLOW_MS;
  return {result: slow ? 'slow' : 'works', rtt,
    text: slow ? `works, but slowly: round trip ${rtt} ms` : `works: round trip ${rtt} ms`};
}

function blocked(/** @type {string} */ why) {
  return {result: 'blocked', rtt: null, text: `blocked: ${why}`};
}

async function testWebSocket() {
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(url);
  try {
    await withTimeout(new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('the connection was refused or cut'));
    }), 'no connection');
    const rtts = [];
    for (let i = 0; i < PINGS; i++) {
      const t0 = performance.now();
      ws.send('{"type":"ping"}');
      await withTimeout(new Promise(resolve => { ws.onmessage = e => { if (JSON.parse(e.data).type === 'pong') resolve(null); }; }), 'no reply');
      rtts.push(performance.now() - t0);
    }
    return verdict(rtts);
  } catch (e) {
    return blocked(e.message);
  } finally {
    ws.close(1000);
  }
}

/**
 * One PeerConnection to the server's echo endpoint, reaching it only by the
 * given path: the server's candidates of `proto` ("udp" or "tcp"), relayed
 * through `servers` when policy is "relay".
 */
async function testPeer(/** @type {string} */ proto, /** @type {any[]} */ servers, /** @type {RTCIceTransportPolicy} */ policy) {
  if (policy === 'relay' && servers.length === 0) {
    return {result: 'unavailable', rtt: null, text: noTurnReason ? `not tested: ${noTurnReason}` : 'not offered by this server'};
  }
  const pc = new RTCPeerConnection({iceServers: servers, iceTransportPolicy: policy});
  try {
    const dc = pc.createDataChannel('diag');
    await pc.setLocalDescription(await pc.createOffer());
    await withTimeout(new Promise(resolve => {
      if (pc.iceGatheringState === 'complete') resolve(null);
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(null); };
    }), 'gathering took too long', GATHER_MS).catch(() => {});
    if (policy === 'relay' && !/ typ relay/.test(pc.localDescription?.sdp || '')) {
      return blocked(`the TURN server did not answer within ${GATHER_MS / 1000} s`);
    }
    const resp = await fetch('diag/echo', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(pc.localDescription)});
    if (!resp.ok) return {result: 'unavailable', rtt: null, text: `the server could not test this (${(await resp.json()).error || resp.status})`};
    const answer = await resp.json();
    // Keep only the server's candidates of the transport under test.
    answer.sdp = answer.sdp.split('\r\n').filter((/** @type {string} */ l) =>
      !l.startsWith('a=candidate:') || l.split(' ')[2].toLowerCase() === proto).join('\r\n');
    if (!answer.sdp.includes('a=candidate:')) return {result: 'unavailable', rtt: null, text: 'not offered by this server'};
    await pc.setRemoteDescription(answer);
    await withTimeout(new Promise((resolve, reject) => {
      dc.onopen = resolve;
      pc.onconnectionstatechange = () => { if (pc.connectionState === 'failed') reject(new Error('no connection')); };
    }), `no connection within ${TIMEOUT_MS / 1000} s`);
    const rtts = [];
    for (let i = 0; i < PINGS; i++) {
      const t0 = performance.now();
      dc.send(String(i));
      await withTimeout(new Promise(resolve => { dc.onmessage = e => { if (e.data === String(i)) resolve(null); }; }), 'no echo');
      rtts.push(performance.now() - t0);
    }
    const v = verdict(rtts);
    return {...v, detail: await selectedPair(pc)};
  } catch (e) {
    return blocked(e.message);
  } finally {
    pc.close();
  }
}

/** "local relay/udp tls -> remote host/tcp 1.2.3.4:443" of the selected pair. */
async function selectedPair(/** @type {RTCPeerConnection} */ pc) {
  const stats = await pc.getStats();
  let out = '';
  stats.forEach(r => {
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const p = stats.get(r.selectedCandidatePairId), l = stats.get(p.localCandidateId), m = stats.get(p.remoteCandidateId);
      out = `local ${l.candidateType}/${l.protocol}${l.relayProtocol ? ' via ' + l.relayProtocol : ''}, server ${m.candidateType}/${m.protocol} ${m.address}:${m.port}`;
    }
  });
  return out;
}

function withTimeout(/** @type {Promise<any>} */ p, /** @type {string} */ why, ms = TIMEOUT_MS) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(why)), ms); })])
    .finally(() => clearTimeout(timer));
}

function show(/** @type {string} */ name, /** @type {Result} */ r) {
  const li = /** @type {HTMLElement} */ (document.querySelector(`#results [data-test="${name}"]`));
  li.dataset.result = r.result;
  li.dataset.rtt = r.rtt == null ? '' : String(r.rtt);
  /** @type {HTMLElement} */ (li.querySelector('span')).textContent = r.text + (r.detail ? ` (${r.detail})` : '');
}

async function runAll() {
  const list = /** @type {HTMLElement} */ (document.getElementById('results'));
  const rerun = /** @type {HTMLButtonElement} */ (document.getElementById('rerun'));
  const summary = /** @type {HTMLElement} */ (document.getElementById('summary'));
  rerun.disabled = true;
  diag.done = false;
  diag.results = {};
  list.replaceChildren();
  for (const [name, t] of Object.entries(tests)) {
    const li = document.createElement('li');
    li.dataset.test = name;
    li.dataset.result = 'testing';
    const title = document.createElement('strong');
    title.textContent = t.title;
    const text = document.createElement('span');
    text.textContent = 'testing…';
    li.append(title, text);
    list.append(li);
  }
  summary.textContent = '';
  let ice = [];
  noTurnReason = '';
  try {
    // A sign-in link's token (servers with access control) unlocks TURN.
    const token = new URLSearchParams(location.search).get('token') || '';
    const r = await fetch('diag/ice' + (token ? '?token=' + encodeURIComponent(token) : ''));
    const body = await r.json();
    ice = body.iceServers || [];
    if (body.message) noTurnReason = body.message;
  } catch { /* the TURN tests then report "not offered" */ }
  await Promise.all(Object.entries(tests).map(async ([name, t]) => {
    const r = await t.run(ice).catch(e => blocked(e.message));
    diag.results[name] = r;
    show(name, r);
  }));
  const media = ['udp', 'icetcp', 'turn-udp', 'turn-tcp', 'turn-tls'].filter(n => ['works', 'slow'].includes(diag.results[n].result));
  summary.textContent = diag.results.websocket.result === 'blocked' ? 'The server cannot be reached for signaling: calls will not work from this network.'
    : media.length === 0 ? 'No media path works: calls will not connect from this network.'
    : diag.results.udp.result === 'works' ? 'Calls should work well from this network.'
    : 'Calls should work from this network, over ' + (tests[media[0]].title) + '.';
  diag.done = true;
  rerun.disabled = false;
}

/** @type {HTMLElement} */ (document.getElementById('rerun')).addEventListener('click', () => { runAll(); });
runAll();
