package turn

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/pion/logging"
)

// levelTrace is below slog.LevelDebug, for pion's trace output.
const levelTrace = slog.LevelDebug - 4

// pionLoggerFactory routes pion's logs to slog. pion logs per-request
// chatter (e.g. "permission denied for client ...") at Info; it is mapped
// to Debug so clients cannot flood the log at Info level.
type pionLoggerFactory struct {
	log  *slog.Logger
	gate *logGate // nil: never closed
}

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope), gate: f.gate}
}

// logGate silences pion once the server is closed: pion's accept loops
// log their last error after Server.Close has returned (it does not wait
// for them), which would write to a logger its owner has let go (a test's
// t.Log panics then).
type logGate struct {
	mu     sync.RWMutex
	closed bool
}

func (g *logGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type pionLogger struct {
	log  *slog.Logger
	gate *logGate
}

func (p pionLogger) emit(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !p.log.Enabled(ctx, level) {
		return
	}
	if p.gate != nil {
		p.gate.mu.RLock()
		defer p.gate.mu.RUnlock()
		if p.gate.closed {
			return
		}
	}
	p.log.Log(ctx, level, fmt.Sprintf(format, args...))
}

func (p pionLogger) Trace(msg string)                  { p.emit(levelTrace, "%s", msg) }
func (p pionLogger) Tracef(format string, args ...any) { p.emit(levelTrace, format, args...) }
func (p pionLogger) Debug(msg string)                  { p.emit(slog.LevelDebug, "%s", msg) }
func (p pionLogger) Debugf(format string, args ...any) { p.emit(slog.LevelDebug, format, args...) }
func (p pionLogger) Info(msg string)                   { p.emit(slog.LevelDebug, "%s", msg) }
func (p pionLogger) Infof(format string, args ...any)  { p.emit(slog.LevelDebug, format, args...) }
func (p pionLogger) Warn(msg string)                   { p.emit(slog.LevelWarn, "%s", msg) }
func (p pionLogger) Warnf(format string, args ...any)  { p.emit(slog.LevelWarn, format, args...) }
func (p pionLogger) Error(msg string)                  { p.emit(slog.LevelError, "%s", msg) }
func (p pionLogger) Errorf(format string, args ...any) { p.emit(slog.LevelError, format, args...) }
