package server

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// processCPUTime is the user+system CPU time of the process so far.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodeJSON measures the request decoder (UTF-8 check, depth and
// key scan, decode, duplicate-key check) on the workload's requests and on a
// wide object, where a per-key duplicate check would cost the most.
func BenchmarkDecodeJSON(b *testing.B) {
	bodies := map[string][]byte{}
	for _, name := range []string{"safe", "complex"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			b.Fatal(err)
		}
		bodies[name] = raw
	}
	var wide strings.Builder
	wide.WriteString(`{"input":{`)
	for i := 0; i < 1000; i++ {
		if i > 0 {
			wide.WriteByte(',')
		}
		fmt.Fprintf(&wide, `"k%d":{"v":%d}`, i, i)
	}
	wide.WriteString(`}}`)
	bodies["wide-1000"] = []byte(wide.String())
	// std: the same checks with encoding/json decoding, the path bodies
	// with escaped strings take (and every body took before decodeFast).
	std := func(b []byte, depth int) (any, error) {
		keys, _, err := checkDepth(b, depth)
		if err != nil {
			return nil, err
		}
		return decodeStd(b, keys)
	}
	for _, name := range []string{"safe", "complex", "wide-1000"} {
		for _, dec := range []struct {
			name string
			f    func([]byte, int) (any, error)
		}{{"fast", decodeJSON}, {"std", std}} {
			body := bodies[name]
			b.Run(name+"/"+dec.name, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				cpu0 := processCPUTime()
				for b.Loop() {
					if _, err := dec.f(body, 64); err != nil {
						b.Fatal(err)
					}
				}
				// CPU time per op: on a shared, loaded machine wall-clock ns/op
				// also counts the time spent waiting for a CPU.
				b.ReportMetric(float64(processCPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkDuplicateKeyCheck isolates what the duplicate-key check adds to a
// decode: the walk summing object sizes (the colon count rides on the depth
// scan, which BenchmarkCheckDepth measures with it).
func BenchmarkDuplicateKeyCheck(b *testing.B) {
	for _, name := range []string{"safe", "complex"} {
		body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			b.Fatal(err)
		}
		v, err := decodeJSON(body, 64)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("walk/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if countEntries(v) == 0 {
					b.Fatal("no entries")
				}
			}
		})
		b.Run("scan/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := checkDepth(body, 64); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkYAMLBody compares a request's body decoded from JSON with the
// same body sent as YAML (converted to JSON, then decoded): what a YAML
// body costs before admission (readBody's comment).
func BenchmarkYAMLBody(b *testing.B) {
	for _, name := range []string{"safe", "complex"} {
		body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "requests", name+".json"))
		if err != nil {
			b.Fatal(err)
		}
		y, err := yaml.JSONToYAML(body)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("json/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeJSON(body, 64); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("yaml/"+name, func(b *testing.B) {
			b.ReportAllocs()
			var buf bytes.Buffer
			for b.Loop() {
				buf.Reset()
				buf.Write(y)
				if err := yamlToJSON(&buf, 1<<20); err != nil {
					b.Fatal(err)
				}
				if _, err := decodeJSON(buf.Bytes(), 64); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
