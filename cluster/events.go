package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Bounds on the cluster's events a failed release's error quotes.
const (
	maxWarnings      = 3
	maxWarningLen    = 300
	maxEventsScanned = 200
	// eventSkew is how far before the deploy began an event may be dated
	// and still count (the cluster's clock is not ours).
	eventSkew = time.Minute
)

var eventsGVR = schema.GroupVersionResource{Version: "v1", Resource: "events"}

// warnings returns up to maxWarnings distinct Warning events of namespace
// ns dated after since, newest first, each as "Kind/name: Reason: message"
// (sanitized and cut to maxWarningLen): why a release's pods are not ready
// (FailedScheduling, FailedCreate, ...), which the waiter's status does
// not say. Failing to read them yields nothing: they only explain.
func (d *Deployer) warnings(ctx context.Context, ns string, since time.Time) []string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := d.dyn.Resource(eventsGVR).Namespace(ns).List(ctx, metav1.ListOptions{
		FieldSelector: "type=Warning",
		Limit:         maxEventsScanned,
	})
	if err != nil {
		return nil
	}
	type ev struct {
		at   time.Time
		line string
		key  string
	}
	var evs []ev
	for _, it := range list.Items {
		at := eventTime(&it)
		if at.Before(since.Add(-eventSkew)) {
			continue
		}
		kind, _, _ := unstructured.NestedString(it.Object, "involvedObject", "kind")
		name, _, _ := unstructured.NestedString(it.Object, "involvedObject", "name")
		reason, _, _ := unstructured.NestedString(it.Object, "reason")
		msg, _, _ := unstructured.NestedString(it.Object, "message")
		evs = append(evs, ev{
			at:   at,
			line: clean(fmt.Sprintf("%s/%s: %s: %s", kind, name, reason, msg)),
			key:  kind + "\x00" + reason + "\x00" + msg,
		})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.After(evs[j].at) })
	var out []string
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.key] {
			continue // the same reason for another replica
		}
		seen[e.key] = true
		out = append(out, e.line)
		if len(out) == maxWarnings {
			break
		}
	}
	return out
}

// eventTime is an event's latest time: lastTimestamp, eventTime, or its
// creation.
func eventTime(u *unstructured.Unstructured) time.Time {
	for _, f := range [][]string{{"lastTimestamp"}, {"eventTime"}, {"series", "lastObservedTime"}} {
		if s, ok, _ := unstructured.NestedString(u.Object, f...); ok && s != "" {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return t
			}
		}
	}
	return u.GetCreationTimestamp().Time
}

// clean makes cluster text one printable line of at most maxWarningLen
// bytes.
func clean(s string) string {
	s = printable(s)
	if len(s) > maxWarningLen {
		s = strings.ToValidUTF8(s[:maxWarningLen], "") + "…"
	}
	return s
}

// withWarnings adds the warnings, if any, to a failed release's error.
func withWarnings(err error, warns []string) error {
	if len(warns) == 0 {
		return err
	}
	return fmt.Errorf("%w\n  cluster warnings: %s", err, strings.Join(warns, "\n  cluster warnings: "))
}

// printable makes cluster text one printable line: control characters and
// the line separators YAML 1.1 honours (U+0085, U+2028, U+2029) become
// spaces, runs of spaces one. Kinds, names and messages come from objects
// anyone able to write them may have crafted; a line break in them would
// end a comment (the objects backup) or fake a line of output.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}
