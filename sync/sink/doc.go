// Package sink drains the outbox of sync/store to the cloud: an HTTP sink that
// posts JSON batches (SPEC §7) and an MQTT bridge that publishes every record
// to a separate broker. One Sink serves one configured sink; Run drains it
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
// pipelined on a single HTTP/1.1 connection (RFC 9112 §9.3.2; servers answer
// pipelined requests in order, and net/http, nginx and the cloud front ends
// handle them one after another), MQTT PUBLISHes share one connection and
// brokers keep their order (MQTT 3.1.1 §4.6). Parallel connections would let
// batch k+1 overtake batch k.
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
// The body is signed as sent: X-Moongate-Signature is the HMAC-SHA256 of the
// exact bytes on the wire, the gzipped bytes when the body is gzipped, so a
// receiver verifies before it decompresses or parses anything. Gzip "auto"
// (the default) starts uncompressed and compresses once a response carries
// Accept-Encoding with gzip (RFC 7694 §3); a 415 to a gzipped request turns
// compression off and resends the batch uncompressed. "on" always compresses,
// "off" never does.
//
// 2xx acknowledges the batch. 408, 429 and 5xx are retried with exponential
// backoff and full jitter, capped, or after Retry-After when the response
// carries it (seconds or an HTTP date). 3xx, 401, 403, 404, 405 and 407 are
// retried the same way: they mean a wrong URL or credentials, and sending
// every record to $dead because a token expired would empty the outbox into
// the dead-letter stream. Any other 4xx rejects content: the batch is split
// in halves until the rejected record is alone, and that record goes to the
// $dead stream with the status and response; the rest is delivered.
//
// A 2xx body may carry {"commands": [{"topic", "payload", "qos", "retain"}]}.
// Commands are published through the Publisher once per batch: before
// publishing, the lane writes {batch key, commands} to store meta, publishes,
// marks them applied, and only then moves the cursor. A batch resent after a
// crash whose key is recorded as applied does not publish again; commands
// recorded but not marked applied are published at the next start. So every
// response's commands are published at least once, and twice only if the
// gateway dies between publishing and recording it.
//
// # States
//
// A sink is online after a delivery, backing_off after the receiver answered
// with a retryable status, offline when it could not be reached (dial, TLS,
// timeout, connection lost, MQTT not connected), and disabled when configured
// so. The state of a sink is the worst state of its lanes. Every change is
// logged once and passed to Config.OnTransition; retries are not logged.
package sink
