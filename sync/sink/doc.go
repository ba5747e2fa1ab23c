// Package sink drains the outbox of sync/store to the cloud: an HTTP sink that
// posts JSON batches (SPEC §7) or CloudEvents, an MQTT bridge that publishes
// every record to a separate broker, and a NATS JetStream sink. One Sink serves one configured sink; Run drains it
// until its context ends and Status reports it.
//
// # Delivery
//
// Delivery is at least once. Each stream a sink takes has its own lane (one
// goroutine) that reads the stream from the sink's cursor, cuts batches and
// keeps up to a window of them in flight on one ordered connection. The
// cursor, and with it the outbox, only moves over the contiguous prefix of
// batches the receiver acknowledged (an HTTP 2xx, or a PUBACK for every record
// of the batch); a record is never deleted before that. Acks are written to
// the store at most every AckInterval, so a crash resends at most that much
// plus the window.
//
// # Order
//
// Per stream, records reach the receiver in seq order, also with several
// batches in flight. That is why a lane uses one connection: HTTP requests are
// pipelined on a single HTTP/1.1 connection (RFC 9112 §9.3.2: a server
// answers pipelined requests in the order received; net/http's server, like
// most, handles them one after another), and the MQTT bridge's PUBLISHes
// share one connection, whose order brokers keep (MQTT 3.1.1 §4.6). Parallel
// connections would let batch k+1 overtake batch k. A new HTTP connection
// carries one request until the server has answered it without closing, so
// a server that closes after every response simply gets one at a time.
//
// Pipelining has one consequence a receiver must accept: when batch k fails
// (5xx, timeout, connection lost), batches k+1.. were already sent and may
// have been processed. The lane then goes back to k (go-back-N): it resends k
// and every batch after it, in order, with the same ids and Idempotency-Key.
// So a receiver can see a resend, never a record whose predecessors it has not
// been sent before, and after the resend everything follows in order. A
// receiver that wants each batch exactly once drops a batch whose
// Idempotency-Key (or whose records' ids) it has already stored. Setting the
// window to 1 sends a batch only after the previous one was acknowledged.
//
// After a restart the lane starts again from the durable cursor and cuts the
// same batches: a full batch is cut greedily and so deterministically; a batch
// cut short by linger has its seq range written to store meta before it is
// sent, and is cut again to that range. Resent batches carry the same ids and
// the same Idempotency-Key unless the outbox dropped records in between.
//
// # Fairness
//
// Lanes are independent: an old backlog on one stream never delays another
// stream, and a backlog drains at full speed (full batches, whole window)
// while new records keep arriving behind it. Within a stream the order is the
// contract, so live records of that stream wait for its backlog.
//
// # HTTP
//
// The client is HTTP/1.1 written with net/http's Request.Write and
// ReadResponse, because net/http's client never pipelines. It does not use
// HTTP proxies. The body is signed as sent: X-Moongate-Signature is the
// HMAC-SHA256 of the exact bytes on the wire, the gzipped bytes when the body
// is gzipped, so a receiver verifies before it decompresses or parses
// anything. Gzip "auto" (the default) starts uncompressed and compresses once
// a response carries Accept-Encoding with gzip (RFC 7694 §3); a 415 to a
// gzipped request turns compression off for good and resends the batch
// uncompressed. "on" always compresses, "off" never does.
//
// 2xx acknowledges the batch. 408, 429 and 5xx are retried with exponential
// backoff and full jitter, capped, or after Retry-After when the response
// carries it (seconds or an HTTP date, at most 15 minutes). 101, 3xx, 401,
// 403, 404, 405 and 407 are retried the same way: they mean a wrong URL or
// credentials, and sending every record to $dead because a token
// expired would empty the outbox into the dead-letter stream. Any other 4xx
// rejects content: the batch is split in halves until the rejected record is
// alone (about 2*log2(MaxRecords) requests), and that record is appended to
// the $dead stream, function kept, with data
//
//	{"sink": "cloud", "stream": "alerts", "id": "..", "seq": 42, "ts": 1732400000000,
//	 "error": "http 422 Unprocessable Entity: ..", "data": <the record's data>}
//
// and the rest is delivered. A sink that takes $dead itself drops (and
// counts) a $dead record its receiver rejects, rather than looping.
//
// A 2xx body may carry {"commands": [{"topic", "payload", "qos", "retain"}]}:
// a string payload is published as its text, any other JSON value as JSON;
// qos (0 or 1) defaults to 1, retain to false.
// Commands are published through the Publisher once per batch: before
// publishing, the lane writes {batch key, commands} to store meta, publishes,
// marks them applied, and only then moves the cursor. A batch resent after a
// crash whose key is recorded as applied does not publish again; commands
// recorded but not marked applied are published at the next start. So every
// response's commands are published at least once, and twice only if the
// gateway dies between publishing and recording it.
//
// # Authentication
//
// HTTPConfig.Auth adds one scheme on top of the static headers, applied to
// each request as it is written, so a resend carries fresh credentials:
// AWS Signature Version 4 by the AWS SDK's signer over the body as sent
// (keys given, or the SDK's default chain: environment, shared files,
// instance role); a bearer token from the OAuth 2.0 client credentials
// grant (golang.org/x/oauth2); or a Google ID token minted from a service
// account key (golang.org/x/oauth2/google). Tokens are replaced a minute
// before they expire; a 401 drops the token and resends the batch at once,
// and a 401 to a token fetched that way backs off as usual. A 401 or 403 to
// a signed request drops the SDK's cached keys (temporary keys expire) and
// backs off. Failing to get
// credentials (token endpoint down) sends nothing and backs off. Secret
// files readable by group or others are refused.
//
// A Lambda function reports a handler's error in a 200 response with
// X-Amz-Function-Error (and, through a function URL, the runtime's
// {"errorMessage", "errorType"} body): such a response does not
// acknowledge the batch, which is retried like a 5xx.
//
// # CloudEvents
//
// With HTTPConfig.Format "cloudevents" each record is one CloudEvent 1.0 in
// the JSON format: id is the record's id (so a receiver dedupes resends on
// it), source moongate://{gateway}/{function}, type from CloudEventsConfig,
// subject the stream, time the record's ts, datacontenttype
// application/json and data the record's data. The batched mode posts a
// batch as an application/cloudevents-batch+json array; the structured
// (application/cloudevents+json) and binary (ce-* headers, the data as the
// body) modes carry one event per request, so a batch is one record.
// Everything else (pipelining, Idempotency-Key, signature, gzip, the status
// codes) is as for the Moongate format.
//
// # MQTT bridge
//
// Every record is one QoS 1 PUBLISH, not retained, on the topic template
// with {gateway}, {stream} and {function} filled in, with the payload
//
//	{"gateway": "pi-kitchen", "stream": "telemetry", "id": "..", "seq": 42,
//	 "ts": 1732400000000, "function": "env", "data": <the record's data>}
//
// The session is clean: the outbox is the session, and resends come from the
// cursor. Up to MQTTConfig.Window PUBLISHes are outstanding on the
// connection; a batch is acknowledged when every record's PUBACK is in. A
// missing PUBACK (Timeout) ends the connection, and every lane resends from
// its cursor on the next one. A keeper goroutine reconnects with backoff.
//
// # JetStream
//
// Every record is one message on the subject template, with the MQTT
// bridge's payload and Nats-Msg-Id set to the record's id: the stream's
// duplicate window drops a resend of a message it stored but whose PubAck
// was lost. Publishes are asynchronous, up to JetStreamConfig.Window
// awaiting their PubAck on the one connection; a batch is acknowledged when
// the stream's PubAck for each of its records is in. Order holds because a
// lane's publishes share the connection and the first failed publish (an
// error, no PubAck within Timeout, the connection lost) stops the pipe at
// once: nats.go's own retries and its reconnect buffer are off, since a
// retried or buffered publish could land after a later one. The lane then
// resends from the first unacknowledged batch. nats.go reconnects by
// itself, to any server of the list; the sink is offline meanwhile, and
// backing_off while the stream does not answer (no stream for the subject,
// or no leader elected yet). A record larger than the server's max_payload
// or the stream's max_msg_size is isolated and goes to $dead, as a record an
// HTTP receiver rejects.
//
// # States
//
// A sink is online after a delivery, backing_off after the receiver answered
// with a retryable status, offline when it could not be reached (dial, TLS,
// timeout, connection lost; for the MQTT bridge and JetStream, whenever the
// connection is down), and disabled when configured so. The state of a sink is the worst
// state of its lanes and its connection. Every change is logged once and
// passed to Config.OnTransition; retries are not logged.
package sink
