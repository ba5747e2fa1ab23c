package gateway

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/moongate/moongate/mqtt"
)

// deviceBroker is what the console's Devices view needs of the bus. The embedded broker
// has it; a client of an external broker does not, since that broker's devices are not
// the gateway's to list or disconnect.
type deviceBroker interface {
	Devices() []mqtt.Device
	DisconnectDevice(clientID string) error
}

// deviceDoc is one connected device in GET /api/v1/devices (API_SHAPES.md).
type deviceDoc struct {
	ClientID    string    `json:"client_id"`
	User        string    `json:"user"`
	Remote      string    `json:"remote"`
	Listener    string    `json:"listener"`
	ConnectedAt time.Time `json:"connected_at"`
	Received    uint64    `json:"received"`
	Rate        float64   `json:"rate"`
	Denied      uint64    `json:"denied"`
	Slowed      uint64    `json:"slowed"`
}

type devicesDoc struct {
	Devices []deviceDoc `json:"devices"`
	// Broker is "embedded", or "external" when the gateway is a client of another broker
	// and so has no devices to list.
	Broker string `json:"broker"`
}

func (a *api) listDevices(w http.ResponseWriter, r *http.Request) {
	doc := devicesDoc{Devices: []deviceDoc{}, Broker: "external"}
	if b, ok := a.bus.(deviceBroker); ok {
		doc.Broker = "embedded"
		for _, d := range b.Devices() {
			doc.Devices = append(doc.Devices, deviceDoc{
				ClientID: d.ClientID, User: d.User, Remote: d.Remote, Listener: d.Listener,
				ConnectedAt: d.ConnectedAt.UTC(), Received: d.Received,
				// Two decimals say all a moving rate can: the rest is noise in the JSON.
				Rate:   math.Round(d.Rate*100) / 100,
				Denied: d.Denied, Slowed: d.Slowed,
			})
		}
	}
	writeJSON(w, http.StatusOK, doc)
}

func (a *api) disconnectDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b, ok := a.bus.(deviceBroker)
	if !ok {
		writeError(w, http.StatusConflict, "the gateway uses an external broker: disconnect devices there")
		return
	}
	err := b.DisconnectDevice(id)
	switch {
	case errors.Is(err, mqtt.ErrNoDevice):
		writeError(w, http.StatusNotFound, "no device "+strconv.Quote(id)+" is connected")
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
