package testnet

import (
	"net"
	"testing"
)

func TestFreeAddrsAreDistinctAndBindable(t *testing.T) {
	addrs := FreeAddrs(t, 5)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %s handed out twice in %v", a, addrs)
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("address %s is not free after FreeAddrs returned: %v", a, err)
		}
		_ = ln.Close()
	}
}
