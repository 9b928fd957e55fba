// The error every simulator check throws: a run that raises it has found a bug (any other
// exception is a bug of the simulator itself, reported with its stack).

export class SafetyViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetyViolation";
  }
}
