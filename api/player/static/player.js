/* Floodlight web player: hls.js (default) or dash.js (?format=dash), quality menu, stats overlay,
 * DVR seek bar with "go live", and QoE beacons batched to POST /api/v1/qoe/beacons.
 * State is mirrored on window.floodlight so the browser tests and the latency bench can read it. */
(() => {
  'use strict';

  const pageStart = performance.now();
  const params = new URLSearchParams(location.search);
  const segs = location.pathname.split('/').filter(Boolean);
  const streamId = decodeURIComponent(segs[segs.length - 1] || '');
  const format = params.get('format') === 'dash' ? 'dash' : 'hls';
  const BEACON_URL = '/api/v1/qoe/beacons';
  const BEACON_BATCH = 100; // the api accepts at most 100 beacons per request
  const HEARTBEAT_MS = Math.max(1000, Number(params.get('beacon_ms')) || 10000);
  const EVENT_FLUSH_MS = 1000; // events close together go out in one batch
  const MAX_QUEUE = 1000; // beacons kept while the endpoint is unreachable
  const $ = (id) => document.getElementById(id);
  const video = $('video');

  const newId = () => (crypto.randomUUID ? crypto.randomUUID()
    : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join(''));

  const fl = {
    streamId, format, sessionId: newId(), state: 'loading', startupMs: null,
    errors: [], warnings: [], switches: [], stalls: 0, levels: [], currentLevel: null, autoQuality: true,
    latencyMs: null, latencySamples: [], fragLoads: [], bufferS: 0, bandwidthBps: 0, bytes: 0,
    pathway: null, pathwayChanges: [], steering: { loads: 0, priority: null }, stallLog: [],
    beacons: { queued: 0, sent: 0, batches: 0, failed: 0, lastStatus: null, lastBody: null },
    src: null,
  };
  window.floodlight = fl;

  // ---------------------------------------------------------------- sources
  function safeRelative(value) {
    // Only same-origin absolute paths (never another origin) may override the source.
    return value && value.startsWith('/') && !value.startsWith('//') ? value : null;
  }

  async function resolveSources() {
    const id = encodeURIComponent(streamId);
    let master = `/live/${id}/master.m3u8`;
    const override = safeRelative(params.get('src'));
    if (override) {
      master = override;
    } else {
      try {
        const r = await fetch(`/api/v1/live/streams/${id}`, { headers: { accept: 'application/json' } });
        if (r.ok) {
          const info = await r.json();
          if (info.title) { $('title').textContent = info.title; document.title = `${info.title} · Floodlight`; }
          if (info.playback_url) master = info.playback_url;
        }
      } catch (e) { fl.warnings.push(`stream info: ${e}`); }
    }
    const hls = new URL(master, location.href);
    const dash = new URL(hls.href);
    dash.pathname = dash.pathname.replace(/master\.m3u8$/, 'manifest.mpd');
    return { hls: hls.href, dash: dash.href };
  }

  // ---------------------------------------------------------------- QoE beacons
  const acc = { stalls: 0, stallMs: 0, bytes: 0, watchMs: 0, dropped: 0 };
  let stallStart = null;
  let queue = [];
  let flushTimer = null;

  function droppedFrames() {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return q ? q.droppedVideoFrames : 0;
  }

  const int32 = (v) => Math.max(0, Math.min(2147483647, Math.round(Number(v) || 0)));

  function beacon(type, extra = {}) {
    const now = performance.now();
    let stallMs = acc.stallMs;
    if (stallStart !== null) { stallMs += now - stallStart; stallStart = now; }
    const dropped = droppedFrames();
    const level = fl.currentLevel;
    const b = {
      event_time: Date.now(), stream_id: streamId, session_id: fl.sessionId, user_id: '', device_type: 'web',
      quality: level ? level.name : '', buffer_events: acc.stalls, stall_ms: Math.round(stallMs),
      bytes_downloaded: Math.round(acc.bytes), cdn_pop: fl.pathway || location.host, latency_ms: int32(fl.latencyMs),
      startup_ms: type === 'start' ? int32(fl.startupMs) : null,
      bitrate_kbps: level ? int32(level.bitrate / 1000) : 0, dropped_frames: int32(dropped - acc.dropped),
      error_code: extra.error ? String(extra.error).slice(0, 200) : null, event_type: type,
      watch_ms: Math.round(acc.watchMs),
    };
    acc.stalls = 0; acc.stallMs = 0; acc.bytes = 0; acc.watchMs = 0; acc.dropped = dropped;
    queue.push(b);
    if (queue.length > MAX_QUEUE) queue = queue.slice(-MAX_QUEUE);
    fl.beacons.queued += 1;
    if (type !== 'heartbeat' && !flushTimer) flushTimer = setTimeout(flush, EVENT_FLUSH_MS);
  }

  async function flush() {
    clearTimeout(flushTimer); flushTimer = null;
    while (queue.length) {
      const batch = queue.slice(0, BEACON_BATCH);
      try {
        const r = await fetch(BEACON_URL, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ beacons: batch }),
          keepalive: true,
        });
        fl.beacons.lastStatus = r.status;
        fl.beacons.lastBody = (await r.text()).slice(0, 500);
        if (r.status >= 500 || r.status === 429) throw new Error(`beacon endpoint ${r.status}`);
        queue = queue.slice(batch.length); // 2xx, or 4xx (rejected: resending cannot help)
        fl.beacons.batches += 1;
        if (r.ok) fl.beacons.sent += batch.length; else fl.beacons.failed += batch.length;
      } catch (e) {
        fl.warnings.push(`beacons: ${e}`);
        return; // kept in the queue for the next flush
      }
    }
  }

  setInterval(() => { if (fl.state !== 'loading') beacon('heartbeat'); flush(); }, HEARTBEAT_MS);
  addEventListener('pagehide', () => {
    beacon('end');
    const body = JSON.stringify({ beacons: queue.slice(0, BEACON_BATCH) });
    if (navigator.sendBeacon) navigator.sendBeacon(BEACON_URL, new Blob([body], { type: 'application/json' }));
  });

  function reportError(code, detail) {
    fl.errors.push({ code, detail: String(detail || '').slice(0, 300), t: Date.now() });
    const m = $('message'); m.hidden = false; m.textContent = `${code}: ${detail || ''}`;
    beacon('error', { error: code });
  }

  // ---------------------------------------------------------------- playback events
  let lastTick = performance.now();
  video.addEventListener('playing', () => {
    if (fl.startupMs === null) {
      fl.startupMs = Math.round(performance.now() - pageStart);
      fl.state = 'playing';
      beacon('start');
    }
    if (stallStart !== null) {
      acc.stallMs += performance.now() - stallStart; stallStart = null;
      const last = fl.stallLog[fl.stallLog.length - 1];
      if (last && last.ms === null) last.ms = Math.round(Date.now() - last.t);
      beacon('stall');
    }
    fl.state = 'playing';
  });
  video.addEventListener('waiting', () => {
    if (fl.startupMs !== null && stallStart === null && !video.seeking) {
      stallStart = performance.now(); acc.stalls += 1; fl.stalls += 1; fl.state = 'stalled';
      fl.stallLog.push({ t: Date.now(), ms: null, pathway: fl.pathway });
      if (fl.stallLog.length > 200) fl.stallLog.shift();
    }
  });
  video.addEventListener('error', () => {
    const e = video.error;
    reportError(`media_${e ? e.code : 'unknown'}`, e ? e.message : '');
  });

  function onLevelSwitched(level) {
    const prev = fl.currentLevel;
    fl.currentLevel = level;
    if (prev && prev.name !== level.name) {
      fl.switches.push({ from: prev.name, to: level.name, t: Date.now() });
      beacon('switch');
    }
  }

  // The pathway (CDN) media comes from, reported as cdn_pop (issue 18: the steering server ranks pathways by
  // it). A change first sends a 'switch' beacon, so what was counted so far (stalls included) goes to the old one.
  function onPathway(p) {
    if (!p || p === '.' || p === fl.pathway) return false;
    const prev = fl.pathway;
    if (prev !== null) beacon('switch');
    fl.pathway = p;
    fl.pathwayChanges.push({ from: prev, to: p, t: Date.now() });
    return prev !== null;
  }

  // ---------------------------------------------------------------- engines
  function renditionName(url, height, fallback) {
    const m = /\/([^/?]+)\/[^/?]+\.m3u8/.exec(url || '');
    return (m && m[1]) || (height ? `${height}p` : fallback);
  }

  function startHls(src) {
    if (!window.Hls || !Hls.isSupported()) { reportError('hls_unsupported', 'MSE is not available'); return null; }
    const cfg = {
      lowLatencyMode: true, backBufferLength: 90, liveDurationInfinity: true, enableWorker: true,
      // drift back to the target latency (the playlist's PART-HOLD-BACK / HOLD-BACK) by playing slightly faster
      maxLiveSyncPlaybackRate: 1.25,
    };
    // retry a failed load after 250 ms, not hls.js's 1 s: a live buffer holds ~1 s, and after a pathway (CDN)
    // fails the retry already goes to the next one (issue 18); backoff doubles up to 4 s as before
    const quick = (maxNumRetry) => ({ maxNumRetry, retryDelayMs: 250, maxRetryDelayMs: 4000 });
    cfg.fragLoadPolicy = { default: { maxTimeToFirstByteMs: 10000, maxLoadTimeMs: 120000,
      timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 }, errorRetry: quick(8) } };
    cfg.playlistLoadPolicy = { default: { maxTimeToFirstByteMs: 10000, maxLoadTimeMs: 20000,
      timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 }, errorRetry: quick(4) } };
    const target = Number(params.get('target_latency'));
    if (target > 0) cfg.liveSyncDuration = target; // seconds behind the live edge, overriding the playlist
    if (params.get('trace')) { // ?trace=1: hls.js's log and events on window.floodlight.trace (debugging)
      fl.trace = [];
      const note = (level) => (...a) => {
        fl.trace.push([Date.now(), level, '', a.map(String).join(' ').slice(0, 300), Math.round(bufferAhead() * 1000)]);
      };
      cfg.debug = { trace: () => {}, debug: () => {}, log: note('LOG'), info: note('INFO'), warn: note('WARN'), error: note('ERR') };
    }
    const hls = new Hls(cfg);
    if (params.get('trace')) {
      const keep = ['LEVELS_UPDATED', 'LEVEL_SWITCHING', 'LEVEL_LOADED', 'AUDIO_TRACK_SWITCHING', 'AUDIO_TRACK_LOADED',
        'FRAG_LOADING', 'FRAG_BUFFERED', 'BUFFER_FLUSHING', 'ERROR', 'STEERING_MANIFEST_LOADED'];
      keep.forEach((name) => hls.on(Hls.Events[name], (_e, d) => {
        const f = d && (d.frag || (d.part && d.part.fragment));
        const why = name === 'ERROR' ? ` ${d.response ? d.response.code : ''} ${(d.context && d.context.url) || ''}` : '';
        fl.trace.push([Date.now(), name, f ? `${f.type}:${f.sn}.${d.part ? d.part.index : ''}` : '',
          (d && d.details && typeof d.details === 'string' ? d.details : '') + why, Math.round(bufferAhead() * 1000)]);
        if (fl.trace.length > 3000) fl.trace.shift();
      }));
    }
    fl.engine = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
      fl.levels = data.levels.map((l, i) => ({
        index: i, name: renditionName(Array.isArray(l.url) ? l.url[0] : l.url, l.height, `level ${i}`),
        bitrate: l.bitrate, height: l.height,
      }));
      fillQualityMenu();
      pathwayNow();
      video.play().catch((e) => fl.warnings.push(`play(): ${e}`));
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => onLevelSwitched(fl.levels[data.level]));
    // LL-HLS: sit one part closer to the live edge than PART-HOLD-BACK (three parts). A part is listed ~0.25 s
    // after its last frame is captured and every blocking reload is answered the moment it is, so two parts and a
    // delivery margin keep the buffer fed (measured at 1080p: 0 stalls); hls.js still adds 1 s per stall it sees.
    let tuned = target > 0;
    hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => {
      const d = data.details;
      if (tuned || !d.live || !d.partTarget || !d.partHoldBack) return;
      tuned = true;
      hls.targetLatency = Math.max(2 * d.partTarget, d.partHoldBack - d.partTarget) + 0.15;
    });
    // content steering: hls.levels holds the current pathway's variants only. After a move to another pathway,
    // hls.js 1.7 sometimes loads nothing for 1-3 s (LL-HLS parts of the new pathway's variant when the buffer ends
    // a few ms before a segment boundary): an immediate switch to the same quality setting reloads from the
    // playhead on the new pathway at once (measured: stalls of 1.2-2.7 s without it, none over 0.1 s with it)
    const pathwayNow = () => {
      const l = hls.levels && hls.levels[0];
      if (onPathway(l && l.pathwayId)) setTimeout(() => { hls.currentLevel = hls.manualLevel; }, 0);
    };
    hls.on(Hls.Events.LEVELS_UPDATED, pathwayNow);
    hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_e, data) => {
      fl.steering.loads += 1;
      fl.steering.priority = data.steeringManifest['PATHWAY-PRIORITY'] || null;
      fl.steering.t = Date.now();
    });
    hls.on(Hls.Events.FRAG_LOADED, (_e, data) => {
      const n = (data.part ? data.part.stats.loaded : data.frag.stats.loaded) || 0;
      acc.bytes += n; fl.bytes += n;
      // (msn, rendition, part, wall-clock ms) of each load: the latency bench's "delivery" stage
      if (data.frag.type === 'main' && Number.isFinite(data.frag.sn)) {
        const lvl = fl.levels[data.frag.level];
        fl.fragLoads.push([data.frag.sn, lvl ? lvl.name : '', data.part ? data.part.index : -1, Date.now()]);
        if (fl.fragLoads.length > 3000) fl.fragLoads.shift();
      }
    });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (!data.fatal) { fl.warnings.push(`${data.type}/${data.details}`); return; }
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR) { fl.warnings.push(`recovering ${data.details}`); hls.startLoad(); return; }
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) { fl.warnings.push(`recovering ${data.details}`); hls.recoverMediaError(); return; }
      reportError(data.details, data.error ? data.error.message : data.reason);
    });
    hls.loadSource(src);
    hls.attachMedia(video);
    return {
      setLevel: (i) => { hls.currentLevel = i; },
      latencyMs: () => (hls.playingDate ? Date.now() - hls.playingDate.getTime() : null),
      bandwidthBps: () => hls.bandwidthEstimate || 0,
      liveEdge: () => (Number.isFinite(hls.liveSyncPosition) ? hls.liveSyncPosition : null),
      targetS: () => hls.targetLatency || 3,
      // hls.js only speeds up within one target duration of its target; further behind it treats the
      // position as DVR. A viewer who did not seek back is put back on the live position instead.
      drift: () => {
        const d = hls.latestLevelDetails;
        if (!d || !d.live || !Number.isFinite(hls.latency) || !hls.targetLatency) return 0;
        return hls.latency - hls.targetLatency - Math.max(2, 1.5 * d.targetduration);
      },
    };
  }

  function startDash(src) {
    if (!window.dashjs) { reportError('dash_unsupported', 'dash.js missing'); return null; }
    const player = dashjs.MediaPlayer().create();
    fl.engine = player;
    player.updateSettings({ streaming: { delay: { liveDelay: 3 }, liveCatchup: { enabled: true }, abr: { autoSwitchBitrate: { video: true } } } });
    const ev = dashjs.MediaPlayer.events;
    player.on(ev.STREAM_INITIALIZED, () => {
      fl.levels = player.getRepresentationsByType('video').map((r, i) => ({
        index: i, name: r.id || (r.height ? `${r.height}p` : `level ${i}`), bitrate: r.bandwidth, height: r.height,
      }));
      fillQualityMenu();
      const cur = player.getCurrentRepresentationForType('video');
      if (cur) onLevelSwitched(fl.levels.find((l) => l.name === cur.id) || fl.levels[0]);
    });
    player.on(ev.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== 'video') return;
      const rep = e.newRepresentation;
      const lvl = rep && fl.levels.find((l) => l.name === rep.id);
      if (lvl) onLevelSwitched(lvl);
    });
    player.on(ev.FRAGMENT_LOADING_COMPLETED, (e) => {
      if (e.request && e.request.serviceLocation) onPathway(e.request.serviceLocation);
      const n = (e.response && e.response.byteLength) || 0;
      acc.bytes += n; fl.bytes += n;
    });
    player.on(ev.ERROR, (e) => reportError(`dash_${e.error ? e.error.code : 'error'}`, e.error ? e.error.message : ''));
    player.initialize(video, src, true);
    return {
      setLevel: (i) => {
        player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: i < 0 } } } });
        if (i >= 0) player.setRepresentationForTypeByIndex('video', i, true);
      },
      latencyMs: () => { const l = player.getCurrentLiveLatency(); return Number.isFinite(l) && l > 0 ? l * 1000 : null; },
      bandwidthBps: () => (player.getAverageThroughput('video') || 0) * 1000,
      liveEdge: () => null,
      targetS: () => player.getTargetLiveDelay() || 3,
      drift: () => 0, // dash.js catches up by itself (liveCatchup)
    };
  }

  // ---------------------------------------------------------------- UI
  let engine = null;

  function fillQualityMenu() {
    const sel = $('quality');
    sel.replaceChildren(new Option('Auto', '-1'));
    [...fl.levels].sort((a, b) => b.bitrate - a.bitrate)
      .forEach((l) => sel.add(new Option(`${l.name} (${Math.round(l.bitrate / 1000)} kb/s)`, String(l.index))));
  }

  $('quality').addEventListener('change', (e) => {
    const i = Number(e.target.value);
    fl.autoQuality = i < 0;
    if (engine) engine.setLevel(i);
  });
  $('play').addEventListener('click', () => { if (video.paused) video.play(); else video.pause(); });
  video.addEventListener('play', () => { $('play').textContent = 'Pause'; });
  video.addEventListener('pause', () => { $('play').textContent = 'Play'; });
  $('unmute').addEventListener('click', () => { video.muted = !video.muted; $('unmute').textContent = video.muted ? 'Unmute' : 'Mute'; });

  function seekableRange() {
    const s = video.seekable;
    return s && s.length ? [s.start(0), s.end(s.length - 1)] : null;
  }
  function liveEdge() {
    const r = seekableRange();
    const e = engine && engine.liveEdge();
    return e !== null && e !== undefined ? e : (r ? Math.max(r[0], r[1] - (engine ? engine.targetS() : 3)) : null);
  }
  let userBehind = false; // the viewer seeked into the DVR window: do not pull them back to live
  let lastResync = 0;
  function goLive() {
    userBehind = false;
    const e = liveEdge();
    if (e !== null) video.currentTime = e;
    if (video.paused) video.play();
  }
  fl.goLive = goLive;
  $('golive').addEventListener('click', goLive);

  let dragging = false;
  const seek = $('seek');
  seek.addEventListener('input', () => { dragging = true; });
  seek.addEventListener('change', () => {
    dragging = false; userBehind = true; video.currentTime = Number(seek.value);
  });

  const fmt = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

  function bufferAhead() {
    const b = video.buffered; const t = video.currentTime;
    for (let i = 0; i < b.length; i += 1) if (b.start(i) <= t + 0.1 && t < b.end(i)) return b.end(i) - t;
    return 0;
  }

  function tick() {
    const now = performance.now();
    if (!video.paused && stallStart === null && fl.state === 'playing') acc.watchMs += now - lastTick;
    lastTick = now;
    if (!engine) return;
    const lat = engine.latencyMs();
    if (lat !== null && fl.state === 'playing') {
      fl.latencyMs = Math.round(lat);
      fl.latencySamples.push([Date.now(), fl.latencyMs]);
      if (fl.latencySamples.length > 2400) fl.latencySamples.shift();
    }
    fl.bufferS = bufferAhead();
    if (!userBehind && !video.paused && fl.state === 'playing' && engine.drift() > 0 && now - lastResync > 10000) {
      lastResync = now;
      fl.resyncs = (fl.resyncs || 0) + 1;
      const e = liveEdge();
      if (e !== null && e > video.currentTime) video.currentTime = e;
    }
    fl.bandwidthBps = engine.bandwidthBps();
    const r = seekableRange();
    const edge = liveEdge();
    if (r) {
      seek.min = String(r[0]); seek.max = String(r[1]);
      if (!dragging) seek.value = String(video.currentTime);
      const behind = edge !== null ? Math.max(0, edge - video.currentTime) : 0;
      $('position').textContent = `-${fmt(behind)}`;
      $('live-badge').classList.toggle('behind', behind > 3);
    }
    const lvl = fl.currentLevel;
    $('stats').textContent = [
      `stream     ${streamId} (${format}${fl.autoQuality ? ', auto' : ''})`,
      `rendition  ${lvl ? `${lvl.name} @ ${Math.round(lvl.bitrate / 1000)} kb/s` : '-'}`,
      `buffer     ${fl.bufferS.toFixed(2)} s`,
      `bandwidth  ${(fl.bandwidthBps / 1e6).toFixed(2)} Mb/s est.`,
      `latency    ${fl.latencyMs === null ? '-' : `${(fl.latencyMs / 1000).toFixed(2)} s`}`,
      `stalls     ${fl.stalls}   switches ${fl.switches.length}`,
      `time       ${video.currentTime.toFixed(1)} s   dropped ${droppedFrames()}`,
      `beacons    ${fl.beacons.sent} sent${fl.beacons.failed ? `, ${fl.beacons.failed} rejected` : ''}`,
    ].join('\n');
  }
  setInterval(tick, 250);

  // ---------------------------------------------------------------- start
  $('format-badge').textContent = format.toUpperCase();
  resolveSources().then((src) => {
    fl.src = src;
    engine = format === 'dash' ? startDash(src.dash) : startHls(src.hls);
  });
})();
