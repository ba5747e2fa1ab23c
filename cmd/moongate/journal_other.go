//go:build !unix

package main

import "os"

// journalStream: there is no journal but on Linux.
func journalStream(os.FileInfo) string { return "" }
