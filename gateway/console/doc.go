// Package console serves the browser console of the gateway: the embedded UI (Handler)
// and the live websocket stream (Hub) that the UI, and `moongate logs -f`, read.
//
// The gateway mounts them on the console listener:
//
//	hub := console.NewHub(console.HubOptions{Authorize: g.authorized, Matcher: mqtt.Match, Logger: log})
//	defer hub.Close()
//	mux.Handle("GET /api/v1/live", hub)
//	mux.Handle("/", console.Handler())
//
// and calls hub.Publish on its hot path for every event, invocation, log line, sink
// transition, sensor reading and firmware step. Publish never blocks: each client has
// a bounded queue and a rate cap (HubOptions.MaxRate); what a slow client cannot take,
// or what exceeds its rate, is dropped and counted, and the client gets a "skipped"
// message where the gap is. A message no client takes is never encoded.
//
// The JSON the UI expects from the rest of the HTTP API is fixed in API_SHAPES.md.
// The UI is plain ES modules and CSS under ui/, embedded as written: no build step,
// nothing fetched from the internet.
package console
