//go:build !arm

package store

import "github.com/dgraph-io/badger/v4"

// enforceArch is a no-op where int is 64 bits; see arch_arm.go.
func enforceArch(bo badger.Options) badger.Options { return bo }
