function handle(event) return event.payload end
