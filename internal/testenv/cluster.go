package testenv

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of masters only, on loopback.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts masters (at least 3) redis-server nodes with
// --cluster-enabled yes, joins them with redis-cli --cluster create
// (no replicas) and waits until every node reports cluster_state:ok.
func StartRedisCluster(tb testing.TB, masters int, opts ...RedisOption) *RedisCluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("testenv: a Redis cluster needs at least 3 masters, got %d", masters)
	}
	cli := RequireBinary(tb, "redis-cli", "redis-tools")
	c := &RedisCluster{}
	for range masters {
		nodeOpts := append([]RedisOption{
			withPort(clusterPort(tb)),
			WithArgs("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000"),
		}, opts...)
		c.Nodes = append(c.Nodes, StartRedis(tb, nodeOpts...))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if pw := c.Nodes[0].Password(); pw != "" {
		args = append(args, "-a", pw, "--no-auth-warning")
	}
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		for {
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testenv: cluster node %s not ok after 30s: %v %s", n.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Addrs returns the host:port of every node.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns a REDIS_URL listing every node ("redis://[:pw@]h1:p1,h2:p2,...").
func (c *RedisCluster) URL() string {
	auth := ""
	if pw := c.Nodes[0].Password(); pw != "" {
		auth = ":" + pw + "@"
	}
	return "redis://" + auth + strings.Join(c.Addrs(), ",")
}

// clusterPort returns a free port whose cluster bus port (port+10000) is
// free too.
func clusterPort(tb testing.TB) int {
	tb.Helper()
	for range 100 {
		p := FreePort(tb)
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	tb.Fatal("testenv: no free port pair (p, p+10000) for a cluster node")
	return 0
}
