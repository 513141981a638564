// Package testnet holds the network helpers the project's tests share.
package testnet

import (
	"net"
	"testing"
)

// FreeAddrs returns n distinct free 127.0.0.1 addresses: it binds each to port 0, all at once
// so the kernel hands out n different ports, then releases them. Another process may take one
// before the caller binds it; the tests that use it accept that small race.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}()
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testnet: no free port on 127.0.0.1: %v", err)
		}
		listeners = append(listeners, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}
