// Package logkey names the log attributes that more than one package writes, so that a
// search of the logs (journalctl, a log shipper's query) finds every line about one
// function, sink or sensor by one key, whichever package logged it.
package logkey

const (
	Err       = "err"       // the error, always under this key
	Component = "component" // the part of the gateway a logger belongs to (logger.With)
	Function  = "function"  // a function's name
	Version   = "version"   // a function's version number
	Event     = "event"     // an event's id
	Sink      = "sink"      // a sink's name
	Sensor    = "sensor"    // a sensor's name
	Driver    = "driver"    // a sensor's driver
	Pin       = "pin"       // a GPIO pin
	Topic     = "topic"     // an MQTT topic
	Stream    = "stream"    // an outbox stream
	File      = "file"      // a file's path
)
