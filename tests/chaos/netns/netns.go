package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Errors.
var (
	// ErrUnavailable: network namespaces cannot be created here; the message says why and
	// what to install.
	ErrUnavailable = errors.New("netns: network namespaces unavailable")
	// ErrNetemUnsupported: the kernel has no netem queueing discipline (sch_netem).
	ErrNetemUnsupported = errors.New("netns: tc netem unsupported by this kernel")
	// ErrRoute: the root namespace does not route the test subnet through the bridge.
	ErrRoute = errors.New("netns: unexpected route")
)

// commandTimeout bounds every ip/tc invocation.
const commandTimeout = 10 * time.Second

func run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("netns: %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Available reports whether namespaces, veth pairs and bridges can be made, by making a
// throwaway namespace. The error names the missing piece.
func Available() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: the `ip` command is missing (install the Debian package iproute2): %v", ErrUnavailable, err)
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return fmt.Errorf("%w: the `tc` command is missing (install the Debian package iproute2): %v", ErrUnavailable, err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: creating namespaces needs root (euid is %d)", ErrUnavailable, os.Geteuid())
	}
	name := "mpxprobe" + randomHex(3)
	if _, err := run("ip", "netns", "add", name); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer run("ip", "netns", "del", name)
	if _, err := run("ip", "link", "add", name+"a", "type", "veth", "peer", "name", name+"b"); err != nil {
		return fmt.Errorf("%w: veth pairs: %v", ErrUnavailable, err)
	}
	run("ip", "link", "del", name+"a")
	return nil
}

// NetemSupported probes for tc netem in a throwaway namespace.
func NetemSupported() error {
	name := "mpxprobe" + randomHex(3)
	if _, err := run("ip", "netns", "add", name); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer run("ip", "netns", "del", name)
	if _, err := run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"); err != nil {
		return err
	}
	if _, err := run("ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"); err != nil {
		return fmt.Errorf("%w (the kernel needs CONFIG_NET_SCH_NETEM; delay and loss come from tests/chaos/faultproxy instead): %v", ErrNetemUnsupported, err)
	}
	return nil
}

func randomHex(bytes int) string {
	b := make([]byte, bytes)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// Host is one namespace of a Topology.
type Host struct {
	Index     int    // 1-based
	Namespace string // network namespace name
	Addr      string // IPv4 address inside the namespace
	VethHost  string // veth end in the root namespace, on the bridge ("" when emulated)
	VethInner string // veth end inside the namespace ("" when emulated)
	Device    string // the namespace's interface: VethInner, or the TUN device when emulated
}

// Topology is a bridge (or the userspace emulator) in the root namespace and hosts hanging
// off it.
type Topology struct {
	Run        string // per-run prefix of every name
	Bridge     string // the bridge, or the gateway TUN device when emulated
	Subnet     string // e.g. 198.18.42.0/24
	Gateway    string // the bridge's (gateway device's) address
	Hosts      []Host
	Emulated   bool // joined by the userspace emulator rather than a bridge
	namespaces []string
	emulator   *emulator
}

// Options chooses how Create joins the hosts.
type Options struct {
	// Emulated joins the hosts with TUN devices and the userspace emulator instead of veth
	// pairs and a bridge, so SetNetem works without the kernel's sch_netem.
	Emulated bool
	// Emulator sizes the emulator; zero fields take DefaultEmulatorConfig's values.
	Emulator EmulatorConfig
}

// Create builds hosts namespaces joined by a bridge. On error everything made so far is
// deleted.
func Create(hosts int) (*Topology, error) { return CreateWith(hosts, Options{}) }

// CreateEmulated builds hosts namespaces joined by the userspace emulator.
func CreateEmulated(hosts int) (*Topology, error) {
	return CreateWith(hosts, Options{Emulated: true})
}

// CreateWith builds hosts namespaces as opts says. On error everything made so far is
// deleted.
func CreateWith(hosts int, opts Options) (*Topology, error) {
	if hosts < 1 || hosts > 200 {
		return nil, fmt.Errorf("netns: %d hosts: want 1..200", hosts)
	}
	ecfg := opts.Emulator.withDefaults()
	if opts.Emulated {
		if err := ecfg.Validate(); err != nil {
			return nil, err
		}
		if ecfg.Seed == 0 {
			ecfg.Seed = rand64()
		}
	}
	run := "mpx" + randomHex(3)[:5]
	// The third octet is drawn per run; build refuses a subnet that is already routed.
	b := make([]byte, 1)
	rand.Read(b)
	third := 1 + int(b[0])%253
	t := &Topology{
		Run:     run,
		Bridge:  run + "br",
		Subnet:  fmt.Sprintf("198.18.%d.0/24", third),
		Gateway: fmt.Sprintf("198.18.%d.254", third),
	}
	build := t.build
	if opts.Emulated {
		t.Emulated = true
		t.Bridge = run + "gw"
		t.emulator = newEmulator(ecfg, third)
		build = t.buildEmulated
	}
	if err := build(hosts, third); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func rand64() uint64 {
	b := make([]byte, 8)
	rand.Read(b)
	v := uint64(0)
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v | 1
}

func (t *Topology) build(hosts, third int) error {
	if out, _ := run("ip", "-4", "route", "show", t.Subnet); strings.TrimSpace(out) != "" {
		return fmt.Errorf("netns: subnet %s already routed here (%s): %w", t.Subnet, strings.TrimSpace(out), ErrRoute)
	}
	steps := [][]string{
		{"ip", "link", "add", t.Bridge, "type", "bridge"},
		{"ip", "addr", "add", t.Gateway + "/24", "dev", t.Bridge},
		{"ip", "link", "set", t.Bridge, "up"},
	}
	for _, s := range steps {
		if _, err := run(s...); err != nil {
			return err
		}
	}
	for i := 1; i <= hosts; i++ {
		h := Host{
			Index:     i,
			Namespace: fmt.Sprintf("%s-%d", t.Run, i),
			Addr:      fmt.Sprintf("198.18.%d.%d", third, i),
			VethHost:  fmt.Sprintf("%sh%d", t.Run, i),
			VethInner: fmt.Sprintf("%sn%d", t.Run, i),
		}
		h.Device = h.VethInner
		if _, err := run("ip", "netns", "add", h.Namespace); err != nil {
			return err
		}
		t.namespaces = append(t.namespaces, h.Namespace)
		t.Hosts = append(t.Hosts, h)
		in := []string{"ip", "netns", "exec", h.Namespace}
		steps := [][]string{
			{"ip", "link", "add", h.VethHost, "type", "veth", "peer", "name", h.VethInner},
			{"ip", "link", "set", h.VethInner, "netns", h.Namespace},
			{"ip", "link", "set", h.VethHost, "master", t.Bridge},
			{"ip", "link", "set", h.VethHost, "up"},
			append(in, "ip", "link", "set", "lo", "up"),
			append(in, "ip", "addr", "add", h.Addr+"/24", "dev", h.VethInner),
			append(in, "ip", "link", "set", h.VethInner, "up"),
		}
		for _, s := range steps {
			if _, err := run(s...); err != nil {
				return err
			}
		}
	}
	return t.checkRoutes()
}

// checkRoutes is the guard: our addresses must leave the root namespace through our bridge
// (gateway device), nowhere else.
func (t *Topology) checkRoutes() error {
	for _, h := range t.Hosts {
		out, err := run("ip", "-4", "route", "get", h.Addr)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "dev "+t.Bridge) {
			return fmt.Errorf("netns: %s routes via %q, not bridge %s: %w", h.Addr, strings.TrimSpace(out), t.Bridge, ErrRoute)
		}
	}
	return nil
}

// Exec is the command prefix that runs a program inside host i's namespace.
func (t *Topology) Exec(i int) []string {
	return []string{"ip", "netns", "exec", t.host(i).Namespace}
}

func (t *Topology) host(i int) Host {
	if i < 1 || i > len(t.Hosts) {
		panic(fmt.Sprintf("netns: no host %d (have %d)", i, len(t.Hosts)))
	}
	return t.Hosts[i-1]
}

// Netem shapes what host i sends (its veth's egress, or its packets through the emulator).
type Netem struct {
	Delay          time.Duration
	Jitter         time.Duration
	LossPercent    float64 // 0..100
	ReorderPercent float64 // 0..100: that share of packets skips the delay (needs Delay > 0)
}

func (n Netem) args() []string {
	args := []string{"netem"}
	if n.Delay > 0 {
		args = append(args, "delay", fmt.Sprintf("%dus", n.Delay.Microseconds()))
		if n.Jitter > 0 {
			args = append(args, fmt.Sprintf("%dus", n.Jitter.Microseconds()))
		}
	}
	if n.LossPercent > 0 {
		args = append(args, "loss", fmt.Sprintf("%g%%", n.LossPercent))
	}
	if n.ReorderPercent > 0 {
		args = append(args, "reorder", fmt.Sprintf("%g%%", n.ReorderPercent))
	}
	return args
}

// SetNetem replaces host i's egress shaping: tc netem on a bridge topology
// (ErrNetemUnsupported when the kernel lacks it), the emulator's shaping when emulated.
func (t *Topology) SetNetem(i int, n Netem) error {
	if n.LossPercent < 0 || n.LossPercent > 100 || n.ReorderPercent < 0 || n.ReorderPercent > 100 {
		return fmt.Errorf("netns: netem %+v: percentages must be within 0..100", n)
	}
	if n.ReorderPercent > 0 && n.Delay == 0 {
		return fmt.Errorf("netns: netem %+v: reordering needs a delay", n)
	}
	if n.Delay < 0 || n.Jitter < 0 {
		return fmt.Errorf("netns: netem %+v: durations must not be negative", n)
	}
	h := t.host(i)
	if t.Emulated {
		t.emulator.hosts[i-1].netem.Store(&n)
		return nil
	}
	args := append(t.Exec(i), "tc", "qdisc", "replace", "dev", h.VethInner, "root")
	if _, err := run(append(args, n.args()...)...); err != nil {
		if strings.Contains(err.Error(), "qdisc kind is unknown") {
			return fmt.Errorf("%w: %v", ErrNetemUnsupported, err)
		}
		return err
	}
	return nil
}

// ClearNetem removes host i's shaping.
func (t *Topology) ClearNetem(i int) error {
	h := t.host(i)
	if t.Emulated {
		t.emulator.hosts[i-1].netem.Store(nil)
		return nil
	}
	out, err := run(append(t.Exec(i), "tc", "qdisc", "del", "dev", h.VethInner, "root")...)
	if err != nil && !strings.Contains(out, "No such file") && !strings.Contains(out, "Cannot delete qdisc with handle of zero") {
		return err
	}
	return nil
}

// Disconnect takes host i's link down (a partition of that host from everyone, the root
// namespace included); Reconnect brings it back. Emulated, every packet to or from the host
// is dropped, those already queued included.
func (t *Topology) Disconnect(i int) error {
	h := t.host(i)
	if t.Emulated {
		t.emulator.hosts[i-1].disconnected.Store(true)
		return nil
	}
	_, err := run("ip", "link", "set", h.VethHost, "down")
	return err
}

// Reconnect undoes Disconnect.
func (t *Topology) Reconnect(i int) error {
	h := t.host(i)
	if t.Emulated {
		t.emulator.hosts[i-1].disconnected.Store(false)
		return nil
	}
	_, err := run("ip", "link", "set", h.VethHost, "up")
	return err
}

// Stats returns what host i has sent through the emulator; i = 0 is the root namespace's
// gateway device. An error on a bridge topology (the kernel forwards there).
func (t *Topology) Stats(i int) (HostStats, error) {
	if !t.Emulated {
		return HostStats{}, errors.New("netns: Stats: not an emulated topology")
	}
	if i == 0 {
		return t.emulator.gateway.counters.snapshot(), nil
	}
	t.host(i)
	return t.emulator.hosts[i-1].counters.snapshot(), nil
}

// InNamespace runs fn on an OS thread inside host i's namespace: sockets it opens (net.Listen,
// net.Dial, net.ListenPacket with IP literals) belong to that namespace and keep working from
// any goroutine after fn returns. fn must not start goroutines that open sockets: they would
// run in the root namespace.
func (t *Topology) InNamespace(i int, fn func() error) error {
	return inNamespace(t.host(i).Namespace, fn)
}

// Close stops the emulator, deletes the namespaces (their veth pairs or TUN devices go with
// them) and the bridge or gateway device. It reports every failure but keeps going, so one
// stuck device does not leak the rest.
func (t *Topology) Close() error {
	var errs []error
	if t.emulator != nil {
		// Closing the TUN files deletes the devices, the gateway's (and its route) included.
		if err := t.emulator.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range t.namespaces {
		if _, err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	t.namespaces = nil
	for _, h := range t.Hosts {
		// Normally gone with its peer (asynchronously); delete it if the namespace move never
		// happened.
		if h.VethHost == "" {
			continue
		}
		if err := deleteLink(h.VethHost); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteLink(t.Bridge); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteLink deletes a device; one that is already gone is not an error.
func deleteLink(name string) error {
	out, err := run("ip", "link", "del", name)
	if err != nil && strings.Contains(out, "Cannot find device") {
		return nil
	}
	return err
}
