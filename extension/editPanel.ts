/**
 * The edit-diff webview panel: one panel, reused, beside the editor — an instance of the
 * generic webview host with the edit view's protocol. EditRunner (editCommand.ts) answers its
 * requests (revert, save, trace, add a check prompt) and notifies what it shows.
 */
import type * as vscode from 'vscode';
import { EDIT_VIEW, type EditView } from '../webviews/edit/protocol.js';
import { WebviewHost } from './webviewHost.js';

export const EDIT_VIEW_TYPE = EDIT_VIEW.viewType;

export class EditPanel extends WebviewHost<EditView> {
  constructor(context: vscode.ExtensionContext, log: vscode.LogOutputChannel) {
    super(context, EDIT_VIEW, { title: 'Edit diff' }, log);
  }
}
