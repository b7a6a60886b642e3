// Our own picture as a picture-in-picture: dragged with a finger or the mouse, it snaps to
// the nearest corner of the stage when let go; focused, the arrow keys move it to the corner
// in that direction. So it never has to cover the face of the person we talk to.

const CORNERS = ['top-left', 'top-right', 'bottom-left', 'bottom-right'];

export function makeMovable(el, stage) {
  let drag = null;

  el.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    el.setPointerCapture(event.pointerId);
    drag = { id: event.pointerId, x: event.clientX, y: event.clientY };
    el.classList.add('dragging');
  });
  el.addEventListener('pointermove', (event) => {
    if (drag?.id !== event.pointerId) return;
    el.style.translate = `${event.clientX - drag.x}px ${event.clientY - drag.y}px`;
  });
  const drop = (event) => {
    if (drag?.id !== event.pointerId) return;
    drag = null;
    const box = el.getBoundingClientRect();
    const area = stage.getBoundingClientRect();
    const top = box.top + box.height / 2 < area.top + area.height / 2;
    const left = box.left + box.width / 2 < area.left + area.width / 2;
    el.classList.remove('dragging');
    el.style.translate = '';
    el.dataset.corner = `${top ? 'top' : 'bottom'}-${left ? 'left' : 'right'}`;
  };
  el.addEventListener('pointerup', drop);
  el.addEventListener('pointercancel', drop);

  el.addEventListener('keydown', (event) => {
    const [vertical, horizontal] = (CORNERS.includes(el.dataset.corner) ? el.dataset.corner : 'bottom-right').split('-');
    const moves = {
      ArrowUp: ['top', horizontal],
      ArrowDown: ['bottom', horizontal],
      ArrowLeft: [vertical, 'left'],
      ArrowRight: [vertical, 'right'],
    };
    const to = moves[event.key];
    if (!to) return;
    event.preventDefault();
    el.dataset.corner = to.join('-');
  });
}
