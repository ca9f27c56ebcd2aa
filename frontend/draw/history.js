// Undo and redo as whole-canvas snapshots, one per finished action (a stroke, a fill, a picture).

export class History {
  /** @param {number} limit how many snapshots to keep */
  constructor(limit = 40) {
    this.limit = limit;
    /** @type {ImageData[]} */ this.done = [];
    /** @type {ImageData[]} */ this.undone = [];
  }

  /** Call before an action changes the canvas, with the canvas as it is now. */
  record(snapshot) {
    this.done.push(snapshot);
    if (this.done.length > this.limit) this.done.shift();
    this.undone = [];
  }

  /** @returns {ImageData | undefined} the snapshot to restore */
  undo(current) {
    const previous = this.done.pop();
    if (previous) this.undone.push(current);
    return previous;
  }

  /** @returns {ImageData | undefined} the snapshot to restore */
  redo(current) {
    const next = this.undone.pop();
    if (next) this.done.push(current);
    return next;
  }
}
