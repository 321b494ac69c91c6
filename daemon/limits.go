package daemon

import (
	"cmp"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Limits bound what one client can hold of a listener: the model router's
// and the API's alike. Zero fields take the defaults.
type Limits struct {
	// HeaderTimeout is how long a client may take to send a request's
	// headers. Default 10s.
	HeaderTimeout time.Duration
	// ReadTimeout is how long a client may take to send a whole request,
	// body included: a body trickled byte by byte is cut off. Default 60s.
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes refuses larger request headers with 431. Default 64 KiB.
	MaxHeaderBytes int
	// MaxConns is how many connections a listener serves at once; more
	// wait in the kernel's accept queue. Default 4096.
	MaxConns int
}

// Defaults of Limits.
const (
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultReadTimeout    = 60 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxConns       = 4096
)

func (l Limits) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cmp.Or(l.HeaderTimeout, DefaultHeaderTimeout),
		ReadTimeout:       cmp.Or(l.ReadTimeout, DefaultReadTimeout),
		IdleTimeout:       cmp.Or(l.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    cmp.Or(l.MaxHeaderBytes, DefaultMaxHeaderBytes),
	}
}

func (l Limits) listener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, cmp.Or(l.MaxConns, DefaultMaxConns))
}
