package fleet

import "time"

// Report is what a gateway retains on ReportedTopic: what it runs, and what went wrong
// last. It is published after every document it takes or refuses, and every
// ReportInterval, so Updated bounds when an offline gateway was last seen.
type Report struct {
	Gateway string   `json:"gateway"`
	Groups  []string `json:"groups"`
	// Layers are the documents applied, by target: what the gateway runs.
	Layers    []LayerReport    `json:"layers"`
	Functions []FunctionReport `json:"functions"`
	// Health is "ok", or what makes the gateway unhealthy (its store does not answer).
	Health      string `json:"health"`
	OutboxDepth int64  `json:"outbox_depth"`
	// LastError is the last document refused (bad signature, old revision, a function
	// that does not compile), with its target and revision; "" once one is applied after it.
	LastError string    `json:"last_error,omitempty"`
	Updated   time.Time `json:"updated"`
}

// LayerReport is one applied document.
type LayerReport struct {
	Target   string `json:"target"`
	Revision uint64 `json:"revision"`
}

// FunctionReport is one running function.
type FunctionReport struct {
	Name      string `json:"name"`
	Version   int    `json:"version"`
	SHA256    string `json:"sha256"`
	ManagedBy string `json:"managed_by,omitempty"` // "fleet", or "" for a local deploy
	Target    string `json:"target,omitempty"`
	Revision  uint64 `json:"revision,omitempty"`
}

// ReportInterval is how often a gateway publishes its report when nothing changes.
const ReportInterval = 30 * time.Second

// ResyncInterval is how often a gateway subscribes to its desired topics again, which
// makes the broker send the retained documents again: a broker cluster whose nodes learn
// a retained message late (NATS) may have missed it at the subscription.
const ResyncInterval = 5 * time.Minute
