"""The web player served at /watch/{stream_id} (hls.js, dash.js with ?format=dash), owned by the e2e issue."""
