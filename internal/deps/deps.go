// Package deps pins the project's third-party modules in go.mod while the packages that use
// them are written. It is removed once every module has a real importer.
package deps

import (
	_ "github.com/HdrHistogram/hdrhistogram-go"
	_ "github.com/anishathalye/porcupine"
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/klauspost/compress/s2"
	_ "github.com/panjf2000/gnet/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "go.uber.org/goleak"
)
